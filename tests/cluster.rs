//! Several nodes on one real Redis: matching, relays, chat and the session
//! operations across nodes, node death, and Redis going away.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::redis::{RedisCluster, RedisServer};
use common::*;
use quicmatch::client::Client;
use quicmatch::protocol::{ClientMsg, ErrorCode, Gender, IceCandidate, ServerMsg};

/// A node of the pool at `redis`.
async fn node(redis: &RedisServer) -> TestServer {
    start_server(&["--redis", &redis.url()]).await
}

/// Waits (bounded) until every node's heartbeat has seen `n` live nodes, so
/// that each can match the others' waiters.
async fn wait_nodes(nodes: &[&TestServer], n: usize) {
    let deadline = Instant::now() + STEP;
    while nodes.iter().any(|s| s.hub().pool_view().nodes.len() < n) {
        assert!(Instant::now() < deadline, "nodes did not see each other");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn offer(match_id: u64, sdp: &str) -> ClientMsg {
    ClientMsg::Offer {
        match_id,
        sdp: sdp.into(),
    }
}

#[tokio::test]
async fn clients_on_different_nodes_are_matched_fifo_and_relay_in_order() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    wait_nodes(&[&a, &b], 2).await;

    let mut ann = connect(&a).await;
    let mut eve = connect(&b).await;
    let mut bob = connect(&b).await;
    assert_eq!(
        join(&mut ann, "Ann", Gender::Female).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    assert_eq!(
        join(&mut eve, "Eve", Gender::Female).await,
        ServerMsg::Waiting { queue_position: 2 }
    );
    // Bob, on B, gets the longest-waiting woman, Ann on A, who offers.
    let matched = join(&mut bob, "Bob", Gender::Male).await;
    let ServerMsg::Matched {
        match_id,
        partner,
        initiator,
        ..
    } = matched
    else {
        panic!("expected Matched, got {matched:?}");
    };
    assert_eq!(partner.name, "Ann");
    assert!(!initiator);
    match next_msg(&mut ann).await {
        ServerMsg::Matched {
            match_id: id,
            partner,
            initiator,
            ..
        } => {
            assert_eq!(
                (id, partner.name.as_str(), initiator),
                (match_id, "Bob", true)
            );
        }
        other => panic!("expected Matched, got {other:?}"),
    }

    // Relays cross both ways, in order.
    for i in 0..20 {
        send(&mut ann, offer(match_id, &format!("sdp {i}"))).await;
    }
    for i in 0..20 {
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id,
                sdp: format!("sdp {i}")
            }
        );
    }
    send(
        &mut bob,
        ClientMsg::Answer {
            match_id,
            sdp: "answer".into(),
        },
    )
    .await;
    let candidate = IceCandidate {
        candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    };
    send(
        &mut bob,
        ClientMsg::Ice {
            match_id,
            candidate: candidate.clone(),
        },
    )
    .await;
    assert_eq!(
        next_msg(&mut ann).await,
        ServerMsg::Answer {
            match_id,
            sdp: "answer".into()
        }
    );
    assert_eq!(
        next_msg(&mut ann).await,
        ServerMsg::Ice {
            match_id,
            candidate
        }
    );

    // Chat crosses too, and is acknowledged back across.
    let seq = ann.chat(match_id, "hello from A").expect("chat");
    assert_eq!(
        next_chat(&mut bob).await,
        (match_id, seq, "hello from A".into())
    );

    // Bob presses Next: Ann is told and re-queued first (behind Eve); Bob is
    // matched with Eve, on his own node.
    send(&mut bob, ClientMsg::Stop).await;
    assert_eq!(
        next_msg(&mut ann).await,
        ServerMsg::PartnerDisconnected { match_id }
    );
    assert_eq!(
        next_msg(&mut ann).await,
        ServerMsg::Waiting { queue_position: 2 }
    );
    let second = common::match_id(&next_msg(&mut bob).await);
    assert!(second > match_id);
    assert_eq!(common::match_id(&next_msg(&mut eve).await), second);

    // A late relay of the ended match is never delivered.
    send(&mut ann, offer(match_id, "too late")).await;
    ping(&mut ann, 1).await;
    send(&mut eve, offer(second, "to Bob")).await;
    assert_eq!(
        next_msg(&mut bob).await,
        ServerMsg::Offer {
            match_id: second,
            sdp: "to Bob".into()
        }
    );
    assert_quiet(&mut bob, 2).await;
}

/// Redis, nodes A and B, and Ann on A matched with Bob on B in match `id`.
async fn cross_pair() -> (RedisServer, TestServer, TestServer, Client, Client, u64) {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    wait_nodes(&[&a, &b], 2).await;
    let mut ann = connect(&a).await;
    let mut bob = connect(&b).await;
    join(&mut ann, "Ann", Gender::Female).await;
    let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), id);
    (redis, a, b, ann, bob, id)
}

#[tokio::test]
async fn the_previous_partner_rule_holds_across_nodes() {
    let (_redis, a, _b, mut ann, mut bob, id) = cross_pair().await;
    stop_and_both_wait(&mut bob, &mut ann, id).await;
    // Neither is offered to the other; a newcomer on A takes Ann.
    let mut cal = connect(&a).await;
    let next = match_id(&join(&mut cal, "Cal", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), next);
    assert_quiet(&mut bob, 1).await;
}

#[tokio::test]
async fn leave_and_disconnect_across_nodes_tell_the_partner() {
    let (_redis, a, b, mut ann, mut bob, id) = cross_pair().await;

    send(&mut bob, ClientMsg::Leave).await;
    expect_left_to_wait(&mut ann, id).await;
    // Bob is idle: a late relay of the match is dropped, any other gets
    // NotMatched, and he may join again.
    send(&mut bob, offer(id, "late")).await;
    send(&mut bob, offer(id + 1, "x")).await;
    expect_error(&mut bob, ErrorCode::NotMatched).await;
    // Ann was his previous partner: he waits rather than meet her again.
    assert_eq!(
        join(&mut bob, "Bob", Gender::Male).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    bob.close().await;
    // A newcomer on B meets Ann; when he goes away, she is told.
    let mut cal = connect(&b).await;
    let again = match_id(&join(&mut cal, "Cal", Gender::Male).await);
    assert!(again > id, "a fresh match id");
    assert_eq!(match_id(&next_msg(&mut ann).await), again);
    cal.close().await;
    expect_left_to_wait(&mut ann, again).await;
    wait_counts(&a, (1, 0, 0, 1)).await;
}

/// A `Matched` the pool published before Ann's Leave but that reaches her
/// node only after she joined again (an inbox running late) is not shown
/// to her: her next match is the one made after the Leave. The late
/// message is published by hand, as Redis would have delivered it.
#[tokio::test]
async fn a_match_made_before_a_leave_is_not_shown_after_the_next_join() {
    let (redis, _a, b, mut ann, mut bob, id) = cross_pair().await;
    send(&mut ann, ClientMsg::Leave).await;
    expect_left_to_wait(&mut bob, id).await;
    // Bob was her last partner: she waits, and so does he.
    assert_eq!(
        join(&mut ann, "Ann", Gender::Female).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    let client = ::redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let queue = async |conn: &mut ::redis::aio::MultiplexedConnection, gender: u8| {
        let members: Vec<String> = ::redis::cmd("ZRANGE")
            .arg(format!("{{quicmatch}}:q:{gender}"))
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .expect("queue");
        assert_eq!(members.len(), 1, "one waiter: {members:?}");
        members.into_iter().next().unwrap_or_default()
    };
    let ann_member = queue(&mut conn, 1).await;
    let bob_member = queue(&mut conn, 0).await;
    let bob_profile: Vec<u8> = ::redis::cmd("HGET")
        .arg(format!("{{quicmatch}}:s:{bob_member}"))
        .arg("prof")
        .query_async(&mut conn)
        .await
        .expect("Bob's profile");
    let (ann_node, ann_session) = ann_member.split_once(':').expect("node:session");
    let mut late = bytes::BytesMut::new();
    quicmatch::cluster::wire::Unit::Matched {
        session: ann_session.parse().expect("a session id"),
        partner: bob_member.clone(),
        match_id: id,
        initiator: false,
        profile: bob_profile.into(),
    }
    .write(&mut late);
    let _: () = ::redis::cmd("PUBLISH")
        .arg(format!("{{quicmatch}}:inbox:{ann_node}"))
        .arg(late.as_ref())
        .query_async(&mut conn)
        .await
        .expect("publish");
    // Cal arrives on B and meets Ann; his Matched reaches her node after
    // the late one, on the same channel.
    let mut cal = connect(&b).await;
    let next = match_id(&join(&mut cal, "Cal", Gender::Male).await);
    assert!(next > id);
    assert_eq!(match_id(&next_msg(&mut ann).await), next);
    assert_quiet(&mut ann, 1).await;
    assert_quiet(&mut bob, 2).await;
}

#[tokio::test]
async fn stats_cover_the_whole_pool_and_discovery_sends_people_to_the_least_loaded_node() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b_port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address").port()
    };
    let b_url = format!("https://127.0.0.1:{b_port}/signal");
    let b = start_server(&[
        "--redis",
        &redis.url(),
        "--public-url",
        &b_url,
        "--http-port",
        "0",
    ])
    .await;
    wait_nodes(&[&a, &b], 2).await;
    let mut clients: Vec<Client> = Vec::new();
    for name in ["Ann", "Eve"] {
        let mut client = connect(&a).await;
        join(&mut client, name, Gender::Female).await;
        clients.push(client);
    }
    let mut bob = connect(&b).await;
    join(&mut bob, "Bob", Gender::Male).await;
    // Whole pool: 3 sessions, 1 match, Eve waiting; B alone holds 1 session.
    let deadline = Instant::now() + STEP;
    loop {
        let health = http_get(a.http_addr(), "localhost", "/health").await.json();
        let whole = (
            &health["activeUsers"],
            &health["activeMatches"],
            &health["femaleQueue"],
            &health["node"]["activeUsers"],
        );
        if whole == (&3.into(), &1.into(), &1.into(), &2.into()) {
            assert_eq!(health["status"], "ok");
            assert_eq!(health["node"]["nodes"], 2);
            break;
        }
        assert!(Instant::now() < deadline, "pool figures: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = http_get(a.http_addr(), "localhost", "/api/webtransport")
        .await
        .json();
    assert_eq!(info["url"], b_url, "B has fewer sessions and a public URL");
    let _ = b_port;
    drop(clients);
}

#[tokio::test]
async fn a_node_killed_outright_is_reaped_and_its_partners_told() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let mut child = common::process::spawn_node(&redis.url()).await;
    let b_hash = child.hash.expect("self-signed");
    wait_nodes(&[&a], 2).await;
    let mut ann = connect(&a).await;
    let mut bob = try_connect(&child.url, b_hash).await.expect("connect to B");
    join(&mut bob, "Bob", Gender::Male).await;
    let id = match_id(&join(&mut ann, "Ann", Gender::Female).await);
    let killed = Instant::now();
    child.kill();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), next_msg_unbounded(&mut ann))
            .await
            .expect("told within 10 s of the kill"),
        ServerMsg::PartnerDisconnected { match_id: id }
    );
    println!("partner told {:?} after kill -9", killed.elapsed());
    assert_eq!(
        next_msg(&mut ann).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    wait_nodes(&[&a], 1).await;
    assert_eq!(a.hub().pool_view().nodes.len(), 1);
}

/// The next message however long it takes (the caller bounds it).
async fn next_msg_unbounded(client: &mut Client) -> ServerMsg {
    loop {
        match client.next_event().await {
            Some(quicmatch::client::Event::Message(msg)) => return msg,
            Some(_) => {}
            None => panic!("session ended"),
        }
    }
}

#[tokio::test]
async fn redis_down_degrades_then_recovers_with_everyone_in_place() {
    // A pair across nodes, and one within A.
    let (mut redis, a, b, mut ann, mut bob, cross) = cross_pair().await;
    let mut cat = connect(&a).await;
    let mut dan = connect(&a).await;
    join(&mut cat, "Cat", Gender::Female).await;
    let local = match_id(&join(&mut dan, "Dan", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut cat).await), local);

    redis.stop();
    let deadline = Instant::now() + STEP;
    loop {
        let health = http_get(a.http_addr(), "localhost", "/health").await;
        if health.status == 503 {
            assert_eq!(health.json()["status"], "degraded");
            assert!(health.json()["activeUsers"].is_number(), "seed keys kept");
            break;
        }
        assert!(Instant::now() < deadline, "never degraded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pair within A goes on.
    send(&mut cat, offer(local, "still here")).await;
    assert_eq!(
        next_msg(&mut dan).await,
        ServerMsg::Offer {
            match_id: local,
            sdp: "still here".into()
        }
    );
    // A Join meanwhile waits, and is matched once Redis is back.
    let mut eve = connect(&a).await;
    assert_eq!(
        join(&mut eve, "Eve", Gender::Female).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    // Stop cannot be carried out meanwhile: the client is told to retry.
    send(&mut bob, ClientMsg::Stop).await;
    expect_error(&mut bob, ErrorCode::ServerBusy).await;

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = http_get(a.http_addr(), "localhost", "/health").await;
        if health.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Eve, who joined during the outage, is in the pool's queue once the
    // nodes have written back what they hold.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.stats().female_queue != 1 || b.stats().female_queue != 1 {
        assert!(Instant::now() < deadline, "Eve never reached the pool");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut fred = connect(&b).await;
    let fresh = match_id(&join(&mut fred, "Fred", Gender::Male).await);
    assert!(fresh > local.max(cross), "match ids never reused");
    // Eve was told her place in the pool once she entered it.
    assert_eq!(
        next_msg(&mut eve).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    assert_eq!(match_id(&next_msg(&mut eve).await), fresh);
    // The cross-node pair was written back and still relays.
    send(&mut ann, offer(cross, "after the outage")).await;
    assert_eq!(
        next_msg(&mut bob).await,
        ServerMsg::Offer {
            match_id: cross,
            sdp: "after the outage".into()
        }
    );
    // And its Stop now works.
    stop_and_both_wait(&mut bob, &mut ann, cross).await;
}

/// 1,000 people join at once over three nodes, half of each gender: exactly
/// 500 matches, each of a man and a woman, no one matched twice, and no one
/// left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_joins_at_once_over_three_nodes_make_exactly_500_matches() {
    use quicmatch::client::{Connector, Verification};
    use std::collections::HashMap;

    const PEOPLE: usize = 1000;
    let redis = RedisServer::start();
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    wait_nodes(&[&nodes[0], &nodes[1], &nodes[2]], 3).await;
    let connectors: Vec<Connector> = nodes
        .iter()
        .map(|n| {
            let hash = n.certificate_hash().expect("self-signed");
            Connector::new(Verification::CertificateHashes(vec![hash])).expect("connector")
        })
        .collect();
    let mut clients = Vec::with_capacity(PEOPLE);
    let mut handshakes_retried = 0;
    for i in 0..PEOPLE {
        let at = i % nodes.len();
        // Generous: other tests of this binary may load the machine meanwhile.
        // A handshake the transport drops in this burst is tried again, as a
        // real client would (rare: once in a cold run on a loaded machine);
        // what is tested is the matching.
        let mut attempts = 0;
        let client = loop {
            attempts += 1;
            let signal = url(&nodes[at]);
            let connect = connectors[at].connect(&signal);
            match tokio::time::timeout(STEP * 4, connect).await {
                Ok(Ok(client)) => break client,
                Ok(Err(error)) if attempts < 3 => {
                    eprintln!("person {i}: connect failed ({error}); trying again");
                    handshakes_retried += 1;
                }
                other => panic!("person {i} could not connect: {:?}", other.map(|r| r.err())),
            }
        };
        clients.push(client);
    }
    assert!(
        handshakes_retried <= 3,
        "{handshakes_retried} handshakes failed"
    );
    // Everyone joins at once; each reports the match it ends up in.
    let mut joins = tokio::task::JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let gender = if i % 2 == 0 {
            Gender::Male
        } else {
            Gender::Female
        };
        joins.spawn(async move {
            send(
                &mut client,
                ClientMsg::Join(profile(&format!("p{i}"), gender)),
            )
            .await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let msg = tokio::time::timeout(left, next_msg_unbounded(&mut client))
                    .await
                    .expect("matched in time");
                if let ServerMsg::Matched {
                    match_id, partner, ..
                } = msg
                {
                    return (match_id, gender, partner.gender, client);
                }
            }
        });
    }
    let mut by_match: HashMap<u64, Vec<(Gender, Gender)>> = HashMap::new();
    let mut kept = Vec::new();
    while let Some(joined) = joins.join_next().await {
        let (match_id, own, theirs, client) = joined.expect("join task");
        by_match.entry(match_id).or_default().push((own, theirs));
        kept.push(client);
    }
    assert_eq!(by_match.len(), PEOPLE / 2, "exactly 500 matches");
    for (id, sides) in &by_match {
        assert_eq!(sides.len(), 2, "match {id} has two sides");
        assert_ne!(sides[0].0, sides[1].0, "match {id} is of a man and a woman");
        assert_eq!(sides[0].1, sides[1].0);
    }
    // Queues empty, 500 matches in the pool's own figures.
    let deadline = Instant::now() + STEP;
    while nodes.iter().any(|n| {
        n.stats().active_matches != PEOPLE / 2 || n.stats().male_queue + n.stats().female_queue != 0
    }) {
        assert!(
            Instant::now() < deadline,
            "pool figures: {:?}",
            nodes[0].stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(kept);
}

#[tokio::test]
async fn a_pool_on_a_redis_cluster_matches_and_relays_across_nodes() {
    let redis = RedisCluster::start();
    let seeds = redis.urls().join(",");
    // Each node is given a different first seed: any one leads to the rest.
    let a = start_server(&["--redis", &seeds, "--redis-cluster"]).await;
    let reversed: Vec<String> = redis.urls().into_iter().rev().collect();
    let b = start_server(&["--redis", &reversed.join(","), "--redis-cluster"]).await;
    wait_nodes(&[&a, &b], 2).await;
    let mut ann = connect(&a).await;
    let mut bob = connect(&b).await;
    assert_eq!(
        join(&mut ann, "Ann", Gender::Female).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
    assert_eq!(match_id(&next_msg(&mut ann).await), id);
    for i in 0..20 {
        send(&mut ann, offer(id, &format!("offer {i}"))).await;
    }
    for i in 0..20 {
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: format!("offer {i}")
            }
        );
    }
    bob.chat(id, "over the cluster").expect("chat");
    assert_eq!(
        next_chat(&mut ann).await,
        (id, 0, "over the cluster".into())
    );
    stop_and_both_wait(&mut ann, &mut bob, id).await;
    wait_counts(&a, (2, 0, 1, 1)).await;
}

/// A `Stop` whose answer timed out is sent again with the same nonce; the
/// script must run it once, or the repeat would end the next match.
#[tokio::test]
async fn a_stop_repeated_with_its_nonce_runs_once() {
    let redis = RedisServer::start();
    let client = ::redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let script = ::redis::Script::new(include_str!("../src/cluster/pool.lua"));
    // Node n1 holds a lease far in the future.
    let _: () = ::redis::cmd("ZADD")
        .arg("{t}:nodes")
        .arg(9_000_000_000_000_000_i64)
        .arg("n1")
        .query_async(&mut conn)
        .await
        .expect("lease");
    let mut call = async |args: &[&str]| -> String {
        let mut invocation = script.key("{t}");
        for arg in args {
            invocation.arg(*arg);
        }
        invocation.invoke_async(&mut conn).await.expect("script")
    };
    assert_eq!(call(&["join", "n1:1", "1", "ann"]).await, "ok");
    assert_eq!(call(&["join", "n1:2", "0", "bob"]).await, "ok");
    assert_eq!(call(&["stop", "n1:1", "5"]).await, "ok");
    // Ann waits (Bob was her last partner); Cal arrives and meets her.
    assert_eq!(call(&["join", "n1:3", "0", "cal"]).await, "ok");
    let state = async |member: &str| -> (Option<String>, Option<String>) {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        ::redis::cmd("HMGET")
            .arg(format!("{{t}}:s:{member}"))
            .arg("st")
            .arg("p")
            .query_async(&mut conn)
            .await
            .expect("state")
    };
    let matched = (Some("m".into()), Some("n1:3".into()));
    assert_eq!(state("n1:1").await, matched);
    // The repeat of the first Stop leaves the new match alone…
    assert_eq!(call(&["stop", "n1:1", "5"]).await, "ok");
    assert_eq!(state("n1:1").await, matched);
    // …and a new Stop ends it.
    assert_eq!(call(&["stop", "n1:1", "6"]).await, "ok");
    assert_eq!(state("n1:1").await.0.as_deref(), Some("w"));
}

/// Waits (bounded) until `/health` of `node` answers `status`.
async fn wait_health(node: &TestServer, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(node.http_addr(), "localhost", "/health")
        .await
        .status
        != status
    {
        assert!(Instant::now() < deadline, "/health never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Relays across nodes are lost while Redis is away, but they give their
/// sender's credit back (and a partner that has written everything it got
/// gives its whole window back when told of a stall): more than a window of
/// lost relays must not leave the pair without credit, which would get the
/// receiver closed as not reading once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_lost_while_redis_is_away_give_their_credit_back() {
    let (mut redis, a, _b, mut ann, mut bob, id) = cross_pair().await;
    redis.stop();
    wait_health(&a, 503).await;
    // 160 KB of offers: more than the window (128 KiB), all lost.
    let sdp = "x".repeat(8_000);
    for _ in 0..20 {
        send(&mut ann, offer(id, &sdp)).await;
    }
    ping(&mut ann, 1).await;
    redis.restart();
    wait_health(&a, 200).await;
    // The receiving node subscribes to its inbox again (with back-off):
    // probe until relays arrive, then drain up to a marker.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        send(&mut ann, offer(id, "probe")).await;
        let arrived = tokio::time::timeout(Duration::from_millis(300), bob.next_event()).await;
        if let Ok(Some(quicmatch::client::Event::Message(ServerMsg::Offer { .. }))) = arrived {
            break;
        }
        assert!(Instant::now() < deadline, "relays never crossed again");
    }
    send(&mut ann, offer(id, "marker")).await;
    while next_msg(&mut bob).await
        != (ServerMsg::Offer {
            match_id: id,
            sdp: "marker".into(),
        })
    {}
    // Another window's worth goes through, in order, and no one is closed.
    for i in 0..20 {
        send(&mut ann, offer(id, &format!("after {i} {sdp}"))).await;
    }
    for i in 0..20 {
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: format!("after {i} {sdp}")
            }
        );
    }
    ping(&mut ann, 2).await;
    ping(&mut bob, 3).await;
}
