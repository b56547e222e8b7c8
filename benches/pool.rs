//! What a shared pool costs, on loopback: two nodes on one `redis-server`
//! (started here, on a free port). Criterion times, per message:
//!
//! - `relay_offer_2kb/same_node` and `/cross_node`: one-way latency of a
//!   2 KB offer between partners on one node of the pool, and on two nodes
//!   (through Redis pub/sub).
//! - `join_to_matched/cross_node`: a man's `Join` on one node until his
//!   `Matched` with the woman waiting on the other (one script call, one
//!   publish per node); then the percentiles of 500 plain runs of it.
//!
//! Needs `redis-server` on the PATH. Run with `cargo bench --bench pool`.

#[path = "../tests/common/redis.rs"]
mod redis;

use std::time::{Duration, Instant};

use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use quicmatch::client::{Client, Connector, Event, Verification};
use quicmatch::config::Config;
use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
use quicmatch::server::Server;
use tokio::runtime::Runtime;

const STEP: Duration = Duration::from_secs(10);

async fn next_msg(client: &mut Client) -> ServerMsg {
    loop {
        match tokio::time::timeout(STEP, client.next_event()).await {
            Ok(Some(Event::Message(msg))) => return msg,
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

async fn matched(client: &mut Client) -> u64 {
    loop {
        if let ServerMsg::Matched { match_id, .. } = next_msg(client).await {
            return match_id;
        }
    }
}

async fn join(client: &mut Client, name: &str, gender: Gender) {
    let profile = Profile {
        name: name.into(),
        age: 30,
        gender,
    };
    client.send(&ClientMsg::Join(profile)).await.expect("join");
}

/// A node of the pool at `url`, with rate limits out of the benchmark's way.
async fn node(redis_url: &str) -> (Server, String, Connector) {
    let config = Config::parse_from([
        "quicmatch",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--self-signed",
        "--frame-rate",
        "1000000",
        "--datagram-rate",
        "1000000",
        "--redis",
        redis_url,
    ]);
    let server = Server::start(config).await.expect("node starts");
    let url = format!("https://127.0.0.1:{}/signal", server.quic_addr().port());
    let hash = server.certificate_hash().expect("self-signed");
    let connector = Connector::new(Verification::CertificateHashes(vec![hash])).expect("connector");
    (server, url, connector)
}

/// A woman connected to `(wc, wu)` and a man to `(mc, mu)`, matched.
async fn pair(wc: &Connector, wu: &str, mc: &Connector, mu: &str) -> (Client, Client, u64) {
    let mut woman = wc.connect(wu).await.expect("connect");
    let mut man = mc.connect(mu).await.expect("connect");
    join(&mut woman, "Ann", Gender::Female).await;
    next_msg(&mut woman).await;
    join(&mut man, "Bob", Gender::Male).await;
    let id = matched(&mut man).await;
    assert_eq!(matched(&mut woman).await, id);
    (woman, man, id)
}

fn relay(c: &mut Criterion, rt: &Runtime, name: &str, pair: (Client, Client, u64)) {
    let (mut from, mut to, match_id) = pair;
    let offer = ClientMsg::Offer {
        match_id,
        sdp: "v=0 ".repeat(512),
    };
    c.bench_function(&format!("pool/relay_offer_2kb/{name}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    from.send(&offer).await.expect("send");
                    next_msg(&mut to).await;
                }
                start.elapsed()
            })
        })
    });
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let redis = redis::RedisServer::start();
    let ((_a, au, ac), (_b, bu, bc)) =
        rt.block_on(async { (node(&redis.url()).await, node(&redis.url()).await) });
    // Let each node's heartbeat see the other.
    std::thread::sleep(Duration::from_millis(1500));

    let same = rt.block_on(pair(&ac, &au, &ac, &au));
    relay(c, &rt, "same_node", same);
    let cross = rt.block_on(pair(&ac, &au, &bc, &bu));
    relay(c, &rt, "cross_node", cross);

    let mut group = c.benchmark_group("pool/join_to_matched");
    group.sample_size(20);
    group.bench_function("cross_node", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += join_to_matched((&ac, au.as_str()), (&bc, bu.as_str())).await;
                }
                total
            })
        })
    });
    group.finish();

    // Criterion gives means; the aim is on the tail, so the percentiles of
    // a plain run too.
    let mut times: Vec<Duration> = rt.block_on(async {
        let mut times = Vec::with_capacity(PERCENTILE_RUNS);
        for _ in 0..PERCENTILE_RUNS {
            times.push(join_to_matched((&ac, au.as_str()), (&bc, bu.as_str())).await);
        }
        times
    });
    times.sort_unstable();
    let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "pool/join_to_matched/cross_node over {PERCENTILE_RUNS} runs: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

/// Plain runs for the percentiles of `join_to_matched/cross_node`.
const PERCENTILE_RUNS: usize = 500;

/// A woman waits on node A (`a`: its connector and URL); how long from a
/// man's `Join` on node B until his `Matched`.
async fn join_to_matched(a: (&Connector, &str), b: (&Connector, &str)) -> Duration {
    let mut woman = a.0.connect(a.1).await.expect("connect");
    let mut man = b.0.connect(b.1).await.expect("connect");
    join(&mut woman, "Ann", Gender::Female).await;
    next_msg(&mut woman).await;
    let start = Instant::now();
    join(&mut man, "Bob", Gender::Male).await;
    matched(&mut man).await;
    let took = start.elapsed();
    matched(&mut woman).await;
    woman.close().await;
    man.close().await;
    took
}

criterion_group!(benches, bench);
criterion_main!(benches);
