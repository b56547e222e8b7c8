//! Micro-benchmarks of the wire format: encoding and decoding the messages the
//! server handles most (a 2 KB `Offer`, a 200 B `Ice`, a chat datagram), the
//! frame splitter that cuts the signaling stream into frames, and the rewrite
//! that turns a client's relay frame into the server's.
//!
//! Run with `cargo bench --bench codec` (add `-- --warm-up-time 1
//! --measurement-time 3` for a quick run).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quicmatch::codec::{self, FrameDecoder, encode_frame, server_relay_frame};
use quicmatch::protocol::{ClientMsg, Datagram, IceCandidate, ServerMsg};

/// A realistic-looking SDP body of exactly `len` bytes.
fn sdp(len: usize) -> String {
    let mut s =
        String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    while s.len() < len {
        s.push_str("a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\r\n");
    }
    s.truncate(len);
    s
}

/// A 2 KB `Offer`, as a client sends it.
fn offer_msg() -> ClientMsg {
    ClientMsg::Offer {
        match_id: 123_456,
        sdp: sdp(2048),
    }
}

/// An `Ice` message of about 200 bytes, as a client sends it.
fn ice() -> ClientMsg {
    let mut candidate = String::from(
        "candidate:842163049 1 udp 1677729535 203.0.113.7 61665 typ srflx raddr 192.0.2.1 rport 61665 generation 0 ufrag EsAw network-id 1 network-cost 10",
    );
    candidate.truncate(170);
    ClientMsg::Ice {
        match_id: 123_456,
        candidate: IceCandidate {
            candidate,
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("EsAw+kq3".into()),
        },
    }
}

/// A chat datagram with 100 bytes of text.
fn chat() -> Datagram {
    Datagram::Chat {
        match_id: 123_456,
        seq: 42,
        text: "x".repeat(100),
    }
}

fn encode_decode(c: &mut Criterion) {
    let cases: [(&str, ClientMsg); 2] = [("offer_2kb", offer_msg()), ("ice_200b", ice())];
    for (name, msg) in cases {
        let frame = encode_frame(&msg);
        let mut group = c.benchmark_group(format!("codec/{name}"));
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function("encode_frame", |b| b.iter(|| encode_frame(black_box(&msg))));
        group.bench_function("decode", |b| {
            b.iter(|| codec::decode::<ClientMsg>(codec::frame_payload(black_box(&frame))))
        });
        group.finish();
    }

    let datagram = chat();
    let bytes = codec::encode(&datagram);
    let mut group = c.benchmark_group("codec/chat_100b");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| codec::encode(black_box(&datagram))));
    group.bench_function("decode", |b| {
        b.iter(|| codec::decode::<Datagram>(black_box(&bytes)))
    });
    group.finish();

    // What the hub encodes once per side of every match.
    let matched = ServerMsg::Matched {
        match_id: 123_456,
        partner: quicmatch::protocol::Profile {
            name: "Alexandra".into(),
            age: 29,
            gender: quicmatch::protocol::Gender::Female,
        },
        initiator: true,
        ice_servers: Vec::new(),
    };
    c.bench_function("codec/matched/encode_frame", |b| {
        b.iter(|| encode_frame(black_box(&matched)))
    });
}

fn frames(c: &mut Criterion) {
    // A read that holds 16 whole frames (alternating offer and ice), split.
    let offer_msg = offer_msg();
    let ice_msg = ice();
    let offer = encode_frame(&offer_msg);
    let ice = encode_frame(&ice_msg);
    let mut stream = Vec::new();
    for i in 0..16 {
        stream.extend_from_slice(if i % 2 == 0 { &offer } else { &ice });
    }
    let mut group = c.benchmark_group("codec/frame_decoder");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("16_frames_one_read", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            decoder.buffer().extend_from_slice(black_box(&stream));
            let mut n = 0;
            while let Ok(Some(frame)) = decoder.next_frame() {
                n += frame.len();
            }
            n
        })
    });
    // One 2 KB offer arriving in QUIC-packet-sized pieces, as on the wire.
    group.throughput(Throughput::Bytes(offer.len() as u64));
    group.bench_function("offer_in_1200b_reads", |b| {
        let mut decoder = FrameDecoder::default();
        b.iter(|| {
            let mut got = None;
            for piece in black_box(&offer).chunks(1200) {
                decoder.buffer().extend_from_slice(piece);
                if let Ok(Some(frame)) = decoder.next_frame() {
                    got = Some(frame);
                }
            }
            got
        })
    });
    group.finish();

    // The client's relay frame turned into the server's (copy + variant byte).
    let mut group = c.benchmark_group("codec/server_relay_frame");
    group.throughput(Throughput::Bytes(offer.len() as u64));
    group.bench_function("offer_2kb", |b| {
        b.iter(|| server_relay_frame(black_box(&offer_msg), black_box(&offer)))
    });
    group.throughput(Throughput::Bytes(ice.len() as u64));
    group.bench_function("ice_200b", |b| {
        b.iter(|| server_relay_frame(black_box(&ice_msg), black_box(&ice)))
    });
    group.finish();
}

criterion_group!(benches, encode_decode, frames);
criterion_main!(benches);
