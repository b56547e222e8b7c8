//! End-to-end benchmarks over loopback: a real server started in-process
//! (`Server::start`, 127.0.0.1, ephemeral port) and the native client.
//!
//! - `relay_offer_2kb` / `relay_ice_200b`: one-way latency of a relay message,
//!   from the sender's `send` to the partner's `next_event` returning it. Both
//!   ends are in this process, so one clock times both.
//! - `chat_100b`: one-way latency of a chat datagram, `chat` to `Event::Chat`.
//! - `session_setup_pair`: two sessions connect (sharing one socket), join
//!   and are both told `Matched`.
//!
//! The server runs with its rate limits raised so that the benchmark loop is
//! not throttled. Run with `cargo bench --bench e2e`.

use std::time::{Duration, Instant};

use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use quicmatch::client::{Client, Connector, Event, Verification};
use quicmatch::config::Config;
use quicmatch::protocol::{ClientMsg, Gender, IceCandidate, Profile, ServerMsg};
use quicmatch::server::Server;
use tokio::runtime::Runtime;

/// Longest any awaited event may take before the benchmark is abandoned.
const STEP: Duration = Duration::from_secs(10);

fn profile(name: &str, gender: Gender) -> Profile {
    Profile {
        name: name.into(),
        age: 30,
        gender,
    }
}

/// Waits for the next event, bounded by [`STEP`].
async fn event(client: &mut Client) -> Event {
    tokio::time::timeout(STEP, client.next_event())
        .await
        .expect("event in time")
        .expect("session open")
}

/// Waits for `Matched`, skipping `Waiting`; returns the match id.
async fn matched(client: &mut Client) -> u64 {
    loop {
        match event(client).await {
            Event::Message(ServerMsg::Matched { match_id, .. }) => return match_id,
            Event::Message(ServerMsg::Waiting { .. }) => {}
            other => panic!("expected Matched, got {other:?}"),
        }
    }
}

/// Connects two sessions from `connector`, joins them and waits until both
/// are matched; returns them (woman first) and the match id.
async fn pair(connector: &Connector, url: &str) -> (Client, Client, u64) {
    let (a, b) = tokio::join!(connector.connect(url), connector.connect(url));
    let (mut a, mut b) = (a.expect("connect"), b.expect("connect"));
    let (join_a, join_b) = (
        ClientMsg::Join(profile("Ann", Gender::Female)),
        ClientMsg::Join(profile("Bob", Gender::Male)),
    );
    let (sa, sb) = tokio::join!(a.send(&join_a), b.send(&join_b));
    sa.expect("join");
    sb.expect("join");
    let (ma, mb) = tokio::join!(matched(&mut a), matched(&mut b));
    assert_eq!(ma, mb, "both sides of one match");
    (a, b, ma)
}

/// Ends a pair for good: both leave (so that neither can be matched again
/// while the server processes the close), then both close.
async fn part(mut a: Client, mut b: Client) {
    for client in [&mut a, &mut b] {
        client.send(&ClientMsg::Leave).await.expect("leave");
    }
    for client in [&mut a, &mut b] {
        client
            .send(&ClientMsg::Ping { nonce: 7 })
            .await
            .expect("ping");
        while !matches!(
            event(client).await,
            Event::Message(ServerMsg::Pong { nonce: 7 })
        ) {}
    }
    a.close().await;
    b.close().await;
}

/// Takes every event already waiting, without waiting for more.
async fn drain(client: &mut Client) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, client.next_event()).await {}
}

fn start_server(rt: &Runtime) -> (Server, String, Connector) {
    let config = Config::parse_from([
        "quicmatch",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--frame-rate",
        "1000000000",
        "--datagram-rate",
        "1000000000",
    ]);
    rt.block_on(async {
        let server = Server::start(config).await.expect("server starts");
        let url = format!("https://127.0.0.1:{}/signal", server.quic_addr().port());
        let hash = server.certificate_hash().expect("self-signed");
        let connector =
            Connector::new(Verification::CertificateHashes(vec![hash])).expect("connector");
        (server, url, connector)
    })
}

fn relay(c: &mut Criterion, rt: &Runtime, connector: &Connector, url: &str) {
    let (mut a, mut b, match_id) = rt.block_on(pair(connector, url));
    let offer = ClientMsg::Offer {
        match_id,
        sdp: "a".repeat(2048),
    };
    let ice = ClientMsg::Ice {
        match_id,
        candidate: IceCandidate {
            candidate: format!(
                "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host {}",
                "x".repeat(120)
            ),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("EsAw+kq3".into()),
        },
    };
    let mut group = c.benchmark_group("e2e/one_way");
    for (name, msg) in [("relay_offer_2kb", &offer), ("relay_ice_200b", &ice)] {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        a.send(msg).await.expect("send");
                        match event(&mut b).await {
                            Event::Message(ServerMsg::Offer { .. } | ServerMsg::Ice { .. }) => {}
                            other => panic!("unexpected {other:?}"),
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
    }

    let text = "c".repeat(100);
    group.bench_function("chat_100b", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    a.chat(match_id, &text).expect("chat");
                    loop {
                        match event(&mut b).await {
                            Event::Chat { .. } => break,
                            Event::ChatAcked { .. } => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    total += start.elapsed();
                    // The sender's acknowledgements, off the clock.
                    drain(&mut a).await;
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(part(a, b));
}

fn setup(c: &mut Criterion, rt: &Runtime, connector: &Connector, url: &str) {
    let mut group = c.benchmark_group("e2e/setup");
    group.sample_size(20);
    group.bench_function("session_setup_pair", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let (a, b, _) = pair(connector, url).await;
                    total += start.elapsed();
                    part(a, b).await;
                }
                total
            })
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Clients and the connector are dropped on this thread: give them the runtime.
    let _guard = rt.enter();
    let (server, url, connector) = start_server(&rt);
    relay(c, &rt, &connector, &url);
    setup(c, &rt, &connector, &url);
    drop(connector);
    rt.block_on(server.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
