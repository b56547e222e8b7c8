//! Replays the fuzz corpus on stable, without libFuzzer: every file of
//! `fuzz/corpus/<target>/` through the check its cargo-fuzz target runs
//! (`fuzz/src/checks.rs`, the same code), so each input a fuzzer kept stays a
//! regression test. Also builds the corpus's seeds, real messages and
//! operation sequences: `cargo test --test fuzz_corpus -- --ignored
//! write_seeds` writes them into the corpus.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use checks::{Op, TARGETS};
use quicmatch::codec::{encode, encode_frame};
use quicmatch::protocol::{
    ClientMsg, Datagram, ErrorCode, Gender, IceCandidate, IceServer, MAX_FRAME_LEN, Profile,
    ServerMsg,
};

/// Bounds on one target's corpus, so that replaying it stays quick.
const MAX_FILES: usize = 200;
const MAX_BYTES: usize = 1 << 20;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs `target`'s check on every file of its corpus, which must exist, hold
/// something and stay within the bounds; a failure names the file.
fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no target {target}"));
    let dir = corpus_dir(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus is checked in)", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    assert!(
        files.len() <= MAX_FILES,
        "{} holds {} files",
        dir.display(),
        files.len()
    );
    let mut total = 0;
    for path in files {
        let bytes = fs::read(&path).expect("a readable corpus file");
        total += bytes.len();
        assert!(
            total <= MAX_BYTES,
            "{} holds over {MAX_BYTES} bytes",
            dir.display()
        );
        if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
            panic!(
                "{} fails the {target} check; debug it with `cargo +nightly fuzz run {target} {}`",
                path.display(),
                path.display()
            );
        }
    }
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder");
}

#[test]
fn client_msg_corpus() {
    replay("client_msg");
}

#[test]
fn datagram_corpus() {
    replay("datagram");
}

#[test]
fn registry_ops_corpus() {
    replay("registry_ops");
}

#[test]
fn webtransport_input_corpus() {
    replay("webtransport_input");
}

/// Every seed passes its target's check (whether or not minimising the
/// corpus kept it) and every target has seeds.
#[test]
fn seeds_pass_their_checks() {
    let seeds = seeds();
    for (target, check) in TARGETS {
        let mine: Vec<_> = seeds.iter().filter(|(t, _, _)| *t == target).collect();
        assert!(mine.len() >= 3, "{target} has {} seeds", mine.len());
        for (_, name, bytes) in mine {
            if catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err() {
                panic!("seed {name} fails the {target} check");
            }
        }
    }
}

/// Writes the seeds into the corpus as `seed-<name>` (run by hand, after a
/// protocol change; then minimise with `cargo fuzz cmin`).
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
    }
}

fn profile(name: &str, age: u8, gender: Gender) -> Profile {
    Profile {
        name: name.into(),
        age,
        gender,
    }
}

/// One message of each kind a client sends, with realistic contents.
fn client_messages() -> Vec<(&'static str, ClientMsg)> {
    let sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
               a=group:BUNDLE 0 1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
    vec![
        ("join", ClientMsg::Join(profile("Jo", 25, Gender::Female))),
        (
            "join_padded_unicode",
            ClientMsg::Join(profile("  Zoë 😀 ", 120, Gender::Male)),
        ),
        (
            "join_control_char",
            ClientMsg::Join(profile("a\u{7}b", 30, Gender::Male)),
        ),
        (
            "join_long_name",
            ClientMsg::Join(profile(&"é".repeat(33), 18, Gender::Female)),
        ),
        (
            "join_too_young",
            ClientMsg::Join(profile("Kid", 12, Gender::Male)),
        ),
        (
            "offer",
            ClientMsg::Offer {
                match_id: 1,
                sdp: sdp.into(),
            },
        ),
        (
            "answer",
            ClientMsg::Answer {
                match_id: 300,
                sdp: sdp.replace("o=-", "o=answer"),
            },
        ),
        (
            "ice",
            ClientMsg::Ice {
                match_id: 70_000,
                candidate: IceCandidate {
                    candidate: "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx \
                                raddr 0.0.0.0 rport 0 generation 0"
                        .into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    username_fragment: Some("EsAw".into()),
                },
            },
        ),
        (
            "ice_end_of_candidates",
            ClientMsg::Ice {
                match_id: 2,
                candidate: IceCandidate {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_m_line_index: None,
                    username_fragment: None,
                },
            },
        ),
        ("stop", ClientMsg::Stop),
        ("leave", ClientMsg::Leave),
        ("ping", ClientMsg::Ping { nonce: 7 }),
        ("ping_large", ClientMsg::Ping { nonce: u64::MAX }),
    ]
}

/// One message of each kind the server sends.
fn server_messages() -> Vec<(&'static str, ServerMsg)> {
    vec![
        ("waiting", ServerMsg::Waiting { queue_position: 3 }),
        (
            "matched",
            ServerMsg::Matched {
                match_id: 9,
                partner: profile("Ann", 30, Gender::Female),
                initiator: true,
                ice_servers: vec![IceServer {
                    urls: vec![
                        "stun:stun.example.org:3478".into(),
                        "turn:turn.example.org".into(),
                    ],
                    username: Some("1767225600:quicmatch".into()),
                    credential: Some("c2VjcmV0".into()),
                }],
            },
        ),
        (
            "offer",
            ServerMsg::Offer {
                match_id: 9,
                sdp: "v=0\r\n".into(),
            },
        ),
        (
            "partner_disconnected",
            ServerMsg::PartnerDisconnected { match_id: 9 },
        ),
        (
            "error",
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                message: "rate limit exceeded; message dropped".into(),
            },
        ),
        ("pong", ServerMsg::Pong { nonce: 7 }),
        (
            "closing",
            ServerMsg::Closing {
                code: 4,
                reason: "server at capacity".into(),
            },
        ),
    ]
}

/// `bytes` with its first byte (a variant index below 251) in bincode's
/// three-byte varint form, which decoders accept.
fn long_variant(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFB, bytes[0], 0];
    out.extend_from_slice(&bytes[1..]);
    out
}

/// The frame of a raw payload.
fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A `frame_decoder` input: chunk sizes, the buffer kept when idle, the stream.
fn chunked(sizes: &[u8], keep: u8, stream: &[u8]) -> Vec<u8> {
    let mut out = vec![sizes.len() as u8 - 1];
    out.extend_from_slice(sizes);
    out.push(keep);
    out.extend_from_slice(stream);
    out
}

fn ops(cap: u8, min_age: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![cap - 1, min_age];
    for op in ops {
        op.write(&mut out);
    }
    out
}

/// The seeds of every target: (target, name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut seed =
        |target, name: &str, bytes: Vec<u8>| seeds.push((target, name.to_owned(), bytes));

    let clients = client_messages();
    for (name, msg) in &clients {
        seed("client_msg", name, encode(msg).to_vec());
    }
    let offer = encode(&clients[5].1);
    seed("client_msg", "offer_long_variant", long_variant(&offer));
    for (name, msg) in server_messages() {
        seed(
            "client_msg",
            &format!("server_{name}"),
            encode(&msg).to_vec(),
        );
    }

    let stream: Vec<u8> = clients.iter().flat_map(|(_, m)| encode_frame(m)).collect();
    seed(
        "frame_decoder",
        "every_message_one_read",
        chunked(&[255], 0, &stream),
    );
    seed(
        "frame_decoder",
        "every_message_bytewise",
        chunked(&[0], 0, &stream),
    );
    seed(
        "frame_decoder",
        "every_message_mixed_reads",
        chunked(&[2, 254, 6], 1, &stream),
    );
    let mut bad = frame_of(&long_variant(&offer));
    bad.extend(frame_of(&[7]));
    bad.extend(frame_of(&[4, 0]));
    bad.extend(frame_of(&[3, 1, 0, 2]));
    bad.extend(encode_frame(&ClientMsg::Leave));
    seed("frame_decoder", "bad_payloads", chunked(&[3], 2, &bad));
    let mut tail = stream.clone();
    tail.extend_from_slice(&[0, 0, 0, 0]);
    seed(
        "frame_decoder",
        "zero_length_after_frames",
        chunked(&[255], 0, &tail),
    );
    let mut oversized = encode_frame(&ClientMsg::Stop).to_vec();
    oversized.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
    oversized.extend_from_slice(&[0; 16]);
    seed(
        "frame_decoder",
        "oversized_length",
        chunked(&[7], 0, &oversized),
    );
    let ping = encode_frame(&ClientMsg::Ping { nonce: 1 });
    seed(
        "frame_decoder",
        "partial_frame",
        chunked(&[1], 0, &ping[..ping.len() - 1]),
    );
    let largest = encode_frame(&ClientMsg::Offer {
        match_id: 1,
        sdp: "s".repeat(MAX_FRAME_LEN - 5),
    });
    assert_eq!(largest.len(), 4 + MAX_FRAME_LEN);
    seed(
        "frame_decoder",
        "largest_frame",
        chunked(&[255], 0, &largest),
    );

    let chats = [
        (
            "chat",
            Datagram::Chat {
                match_id: 1,
                seq: 0,
                text: "hi!".into(),
            },
        ),
        (
            "chat_unicode",
            Datagram::Chat {
                match_id: 300,
                seq: u32::MAX,
                text: "ça va? 😀".into(),
            },
        ),
        (
            "chat_ack",
            Datagram::ChatAck {
                match_id: 1,
                seq: 0,
            },
        ),
    ];
    for (name, datagram) in &chats {
        seed("datagram", name, encode(datagram).to_vec());
    }
    seed(
        "datagram",
        "chat_ack_long_variant",
        long_variant(&encode(&chats[2].1)),
    );

    let man = |name: &str| profile(name, 30, Gender::Male);
    let woman = |name: &str| profile(name, 30, Gender::Female);
    use Op::*;
    seed(
        "registry_ops",
        "match_stop_leave",
        ops(
            8,
            18,
            &[
                Connect,
                Connect,
                Connect,
                Join(0, man("Bob")),
                Join(1, woman(" Ann ")),
                Join(2, woman("Eve")),
                Stop(1),
                Stop(1),
                Leave(0),
                Disconnect(2),
                TakePeak,
            ],
        ),
    );
    seed(
        "registry_ops",
        "refusals",
        ops(
            2,
            18,
            &[
                Stop(0),
                Connect,
                Join(0, profile("Kid", 12, Gender::Male)),
                Join(0, man("a\u{7}b")),
                Join(0, man("   ")),
                Join(0, man(&"é".repeat(33))),
                Join(0, man("Bob")),
                Join(0, man("Bob")),
                Join(1, woman("Nobody")),
                Connect,
                Connect,
                Disconnect(0),
                Connect,
                TakePeak,
            ],
        ),
    );
    seed(
        "registry_ops",
        "previous_partner_skipped",
        ops(
            6,
            18,
            &[
                Connect,
                Connect,
                Connect,
                Join(0, man("m")),
                Join(1, woman("w")),
                Stop(0),
                Join(2, woman("w2")),
                Disconnect(1),
                Stop(2),
            ],
        ),
    );
    seed(
        "registry_ops",
        "queues_churn",
        ops(
            32,
            18,
            &(0..40)
                .flat_map(|i| {
                    let who = i % 5;
                    let who_profile = if i % 3 == 0 { woman("W") } else { man("M") };
                    match i % 4 {
                        0 => vec![Connect, Join(who, who_profile)],
                        1 => vec![Join(who, who_profile), Stop(who + 1)],
                        2 => vec![Leave(who), Join(who, who_profile)],
                        _ => vec![Disconnect(who), Connect],
                    }
                })
                .collect::<Vec<_>>(),
        ),
    );
    for (name, bytes) in webtransport_inputs() {
        seed("webtransport_input", name, bytes);
    }
    seeds
}

/// What a WebTransport client sends beside its signaling stream, as
/// `webtransport_input` reads it: a client's SETTINGS on its control stream
/// (and a GOAWAY after them), the CONNECT request (with an origin and a
/// join token) then its CLOSE_WEBTRANSPORT_SESSION capsule, and datagrams.
fn webtransport_inputs() -> Vec<(&'static str, Vec<u8>)> {
    use wtransport_proto::bytes::BufferWriter;
    use wtransport_proto::session::SessionRequest;
    use wtransport_proto::settings::Settings;
    use wtransport_proto::varint::VarInt;

    let write = |frame: wtransport_proto::frame::Frame| {
        let mut bytes = vec![0; frame.write_size()];
        frame
            .write_to_buffer(&mut BufferWriter::new(&mut bytes))
            .expect("sized");
        bytes
    };
    let settings = write(
        Settings::builder()
            .qpack_max_table_capacity(VarInt::from_u32(0))
            .enable_webtransport()
            .enable_h3_datagrams()
            .webtransport_max_sessions(VarInt::from_u32(16))
            .build()
            .generate_frame(),
    );
    let mut request =
        SessionRequest::new("https://localhost:4433/signal?token=abc.def").expect("a URL");
    request
        .insert("origin", "http://localhost:8080")
        .expect("not reserved");
    let headers = write(request.headers().generate_frame());
    // DATA frame: CLOSE_WEBTRANSPORT_SESSION (0x2843), code 4000, "bye".
    let mut close = vec![0x00, 0x0a, 0x68, 0x43, 0x07];
    close.extend_from_slice(&4000u32.to_be_bytes());
    close.extend_from_slice(b"bye");
    let chat = encode(&Datagram::Chat {
        match_id: 1,
        seq: 0,
        text: "hi".into(),
    });
    let with = |head: &[u8], parts: &[&[u8]]| {
        let mut bytes = head.to_vec();
        parts.iter().for_each(|part| bytes.extend_from_slice(part));
        bytes
    };
    vec![
        ("control_settings", with(&[0, 255], &[&settings])),
        (
            "control_settings_goaway_split",
            with(&[0, 2], &[&settings, &[0x07, 0x01, 0x00]]),
        ),
        ("connect_request", with(&[1, 255], &[&headers])),
        (
            "connect_request_close_split",
            with(&[1, 6], &[&headers, &close]),
        ),
        ("datagram_chat", with(&[2, 0], &[&[0x00], &chat])),
        (
            "datagram_long_prefix",
            with(&[2, 1], &[&[0x40, 0x01], &chat]),
        ),
    ]
}
