//! Golden vectors: the bytes of sample messages of every variant, shared by the
//! Rust codec and the browser codec (`web/quicmatch.js`) so the two can never
//! drift apart.
//!
//! This test encodes each sample with `quicmatch::codec`, describes it in the
//! JS module's object shape, and compares the whole list with the committed
//! `tests/golden/vectors.json`. `tests/browser.rs` runs the JS codec against the
//! same file inside Chromium.
//!
//! After an intended wire change, regenerate the file with
//! `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.

use std::collections::BTreeSet;
use std::path::PathBuf;

use quicmatch::codec::{self, FrameDecoder};
use quicmatch::protocol::*;
use serde_json::{Value, json};

/// Largest integer a JS number holds exactly; above it the JS codec uses BigInt.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vectors.json")
}

/// A u64 as the JS codec returns it: a number when safe, else `{"bigint": "<decimal>"}`
/// (JSON numbers cannot carry such values exactly through `JSON.parse`).
fn u64_js(v: u64) -> Value {
    if v <= MAX_SAFE_INTEGER {
        json!(v)
    } else {
        json!({ "bigint": v.to_string() })
    }
}

fn gender_js(g: Gender) -> Value {
    json!(match g {
        Gender::Male => "Male",
        Gender::Female => "Female",
    })
}

fn profile_js(p: &Profile) -> Value {
    json!({ "name": p.name, "age": p.age, "gender": gender_js(p.gender) })
}

fn candidate_js(c: &IceCandidate) -> Value {
    json!({
        "candidate": c.candidate,
        "sdp_mid": c.sdp_mid,
        "sdp_m_line_index": c.sdp_m_line_index,
        "username_fragment": c.username_fragment,
    })
}

fn error_code_js(code: ErrorCode) -> Value {
    json!(match code {
        ErrorCode::BadFrame => "BadFrame",
        ErrorCode::InvalidProfile => "InvalidProfile",
        ErrorCode::NotJoined => "NotJoined",
        ErrorCode::AlreadyJoined => "AlreadyJoined",
        ErrorCode::NotMatched => "NotMatched",
        ErrorCode::TooLarge => "TooLarge",
        ErrorCode::RateLimited => "RateLimited",
        ErrorCode::ServerBusy => "ServerBusy",
    })
}

fn client_js(msg: &ClientMsg) -> Value {
    match msg {
        ClientMsg::Join(p) => json!({ "type": "Join", "profile": profile_js(p) }),
        ClientMsg::Offer { match_id, sdp } => {
            json!({ "type": "Offer", "match_id": u64_js(*match_id), "sdp": sdp })
        }
        ClientMsg::Answer { match_id, sdp } => {
            json!({ "type": "Answer", "match_id": u64_js(*match_id), "sdp": sdp })
        }
        ClientMsg::Ice {
            match_id,
            candidate,
        } => json!({
            "type": "Ice",
            "match_id": u64_js(*match_id),
            "candidate": candidate_js(candidate),
        }),
        ClientMsg::Stop => json!({ "type": "Stop" }),
        ClientMsg::Leave => json!({ "type": "Leave" }),
        ClientMsg::Ping { nonce } => json!({ "type": "Ping", "nonce": u64_js(*nonce) }),
    }
}

fn server_js(msg: &ServerMsg) -> Value {
    match msg {
        ServerMsg::Waiting { queue_position } => {
            json!({ "type": "Waiting", "queue_position": queue_position })
        }
        ServerMsg::Matched {
            match_id,
            partner,
            initiator,
            ice_servers,
        } => json!({
            "type": "Matched",
            "match_id": u64_js(*match_id),
            "partner": profile_js(partner),
            "initiator": initiator,
            "ice_servers": ice_servers
                .iter()
                .map(|s| json!({ "urls": s.urls, "username": s.username, "credential": s.credential }))
                .collect::<Vec<_>>(),
        }),
        ServerMsg::Offer { match_id, sdp } => {
            json!({ "type": "Offer", "match_id": u64_js(*match_id), "sdp": sdp })
        }
        ServerMsg::Answer { match_id, sdp } => {
            json!({ "type": "Answer", "match_id": u64_js(*match_id), "sdp": sdp })
        }
        ServerMsg::Ice {
            match_id,
            candidate,
        } => json!({
            "type": "Ice",
            "match_id": u64_js(*match_id),
            "candidate": candidate_js(candidate),
        }),
        ServerMsg::PartnerDisconnected { match_id } => {
            json!({ "type": "PartnerDisconnected", "match_id": u64_js(*match_id) })
        }
        ServerMsg::Error { code, message } => {
            json!({ "type": "Error", "code": error_code_js(*code), "message": message })
        }
        ServerMsg::Pong { nonce } => json!({ "type": "Pong", "nonce": u64_js(*nonce) }),
        ServerMsg::Closing { code, reason } => {
            json!({ "type": "Closing", "code": code, "reason": reason })
        }
    }
}

fn datagram_js(msg: &Datagram) -> Value {
    match msg {
        Datagram::Chat {
            match_id,
            seq,
            text,
        } => json!({ "type": "Chat", "match_id": u64_js(*match_id), "seq": seq, "text": text }),
        Datagram::ChatAck { match_id, seq } => {
            json!({ "type": "ChatAck", "match_id": u64_js(*match_id), "seq": seq })
        }
    }
}

fn profile(name: &str, age: u8, gender: Gender) -> Profile {
    Profile {
        name: name.into(),
        age,
        gender,
    }
}

fn candidate(
    candidate: &str,
    sdp_mid: Option<&str>,
    index: Option<u16>,
    ufrag: Option<&str>,
) -> IceCandidate {
    IceCandidate {
        candidate: candidate.into(),
        sdp_mid: sdp_mid.map(Into::into),
        sdp_m_line_index: index,
        username_fragment: ufrag.map(Into::into),
    }
}

const HOST_CANDIDATE: &str =
    "candidate:842163049 1 udp 1677729535 127.0.0.1 50000 typ host generation 0 ufrag EsAw";

fn client_samples() -> Vec<(&'static str, ClientMsg)> {
    let ping = |nonce| ClientMsg::Ping { nonce };
    vec![
        (
            "protocol example",
            ClientMsg::Join(profile("Jo", 25, Gender::Female)),
        ),
        (
            "empty name, age 0",
            ClientMsg::Join(profile("", 0, Gender::Male)),
        ),
        (
            "non-ASCII name, age 255",
            ClientMsg::Join(profile("Zoë 🙂 Łódź", 255, Gender::Female)),
        ),
        (
            "name starting with U+FEFF (kept as a character)",
            ClientMsg::Join(profile("\u{feff}Ann", 18, Gender::Male)),
        ),
        (
            "empty sdp, match 0",
            ClientMsg::Offer {
                match_id: 0,
                sdp: String::new(),
            },
        ),
        (
            "match 250, 300-byte sdp (length needs 0xFB)",
            ClientMsg::Offer {
                match_id: 250,
                sdp: format!("v=0\r\n{}", "a".repeat(295)),
            },
        ),
        (
            "match 251",
            ClientMsg::Answer {
                match_id: 251,
                sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n".into(),
            },
        ),
        (
            "full candidate, match 65535, m-line 250",
            ClientMsg::Ice {
                match_id: 65_535,
                candidate: candidate(HOST_CANDIDATE, Some("0"), Some(250), Some("EsAw")),
            },
        ),
        (
            "end-of-candidates, match 65536",
            ClientMsg::Ice {
                match_id: 65_536,
                candidate: candidate("", None, None, None),
            },
        ),
        (
            "m-line 251",
            ClientMsg::Ice {
                match_id: 1,
                candidate: candidate("c", Some("video"), Some(251), None),
            },
        ),
        (
            "m-line 65535",
            ClientMsg::Ice {
                match_id: 2,
                candidate: candidate("c", None, Some(65_535), Some("")),
            },
        ),
        ("stop", ClientMsg::Stop),
        ("leave", ClientMsg::Leave),
        ("nonce 0", ping(0)),
        ("nonce 2^32 - 1", ping(u32::MAX as u64)),
        ("nonce 2^32", ping(1 << 32)),
        ("nonce 2^53 - 1 (largest JS number)", ping(MAX_SAFE_INTEGER)),
        ("nonce 2^53 (a BigInt in JS)", ping(MAX_SAFE_INTEGER + 1)),
        ("nonce 2^64 - 1", ping(u64::MAX)),
    ]
}

fn server_samples() -> Vec<(&'static str, ServerMsg)> {
    let error = |code, message: &str| ServerMsg::Error {
        code,
        message: message.into(),
    };
    vec![
        ("position 1", ServerMsg::Waiting { queue_position: 1 }),
        (
            "position 65536",
            ServerMsg::Waiting {
                queue_position: 65_536,
            },
        ),
        (
            "position 2^32 - 1",
            ServerMsg::Waiting {
                queue_position: u32::MAX,
            },
        ),
        (
            "no ice servers",
            ServerMsg::Matched {
                match_id: 1,
                partner: profile("Jo", 25, Gender::Female),
                initiator: true,
                ice_servers: vec![],
            },
        ),
        (
            "STUN and TURN servers",
            ServerMsg::Matched {
                match_id: 4_294_967_296,
                partner: profile("Émile", 120, Gender::Male),
                initiator: false,
                ice_servers: vec![
                    IceServer {
                        urls: vec!["stun:stun.example.org:3478".into()],
                        username: None,
                        credential: None,
                    },
                    IceServer {
                        urls: vec![
                            "turn:turn.example.org:3478?transport=udp".into(),
                            "turns:turn.example.org:5349".into(),
                        ],
                        username: Some("1700000000:quicmatch".into()),
                        credential: Some("c2VjcmV0".into()),
                    },
                    IceServer {
                        urls: vec![],
                        username: Some(String::new()),
                        credential: None,
                    },
                ],
            },
        ),
        (
            "offer",
            ServerMsg::Offer {
                match_id: 7,
                sdp: "v=0\r\n".into(),
            },
        ),
        (
            "answer",
            ServerMsg::Answer {
                match_id: 65_535,
                sdp: String::new(),
            },
        ),
        (
            "candidate",
            ServerMsg::Ice {
                match_id: 9,
                candidate: candidate(HOST_CANDIDATE, Some("0"), Some(0), None),
            },
        ),
        (
            "match 2^32",
            ServerMsg::PartnerDisconnected { match_id: 1 << 32 },
        ),
        (
            "bad frame",
            error(ErrorCode::BadFrame, "frame did not decode"),
        ),
        (
            "invalid profile",
            error(ErrorCode::InvalidProfile, "age must be 18 to 120"),
        ),
        ("not joined", error(ErrorCode::NotJoined, "")),
        (
            "already joined",
            error(ErrorCode::AlreadyJoined, "already waiting"),
        ),
        ("not matched", error(ErrorCode::NotMatched, "not matched")),
        (
            "too large",
            error(ErrorCode::TooLarge, "sdp over 32768 bytes"),
        ),
        ("rate limited", error(ErrorCode::RateLimited, "slow down")),
        ("server busy", error(ErrorCode::ServerBusy, "ça déborde")),
        ("nonce 251", ServerMsg::Pong { nonce: 251 }),
        (
            "shutting down",
            ServerMsg::Closing {
                code: 3,
                reason: "server shutting down".into(),
            },
        ),
        (
            "at capacity",
            ServerMsg::Closing {
                code: 4,
                reason: "server at capacity".into(),
            },
        ),
        (
            "code 2^32 - 1, empty reason",
            ServerMsg::Closing {
                code: u32::MAX,
                reason: String::new(),
            },
        ),
    ]
}

fn datagram_samples() -> Vec<(&'static str, Datagram)> {
    vec![
        (
            "short chat",
            Datagram::Chat {
                match_id: 1,
                seq: 0,
                text: "hi".into(),
            },
        ),
        (
            "non-ASCII chat, seq 2^32 - 1",
            Datagram::Chat {
                match_id: 65_536,
                seq: u32::MAX,
                text: "héllo 👋 — 你好".into(),
            },
        ),
        (
            "1000-byte chat",
            Datagram::Chat {
                match_id: 3,
                seq: 251,
                text: "é".repeat(500),
            },
        ),
        (
            "ack seq 251",
            Datagram::ChatAck {
                match_id: 1,
                seq: 251,
            },
        ),
        (
            "ack seq 65535, match 2^53",
            Datagram::ChatAck {
                match_id: MAX_SAFE_INTEGER + 1,
                seq: 65_535,
            },
        ),
    ]
}

/// Accepted bytes that are not what the encoder writes (bincode takes a varint
/// written wider than needed); both codecs must decode them the same way.
fn decode_only_samples() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "ClientMsg",
            "06fb0500",
            json!({ "type": "Ping", "nonce": 5 }),
        ),
        ("ClientMsg", "fb0400", json!({ "type": "Stop" })),
        (
            "ServerMsg",
            "00fc01000000",
            json!({ "type": "Waiting", "queue_position": 1 }),
        ),
    ]
}

/// Bytes that both codecs must reject, with the reason.
fn invalid_samples() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("ClientMsg", "", "empty input"),
        ("ClientMsg", "07", "unknown ClientMsg variant 7"),
        ("ServerMsg", "09", "unknown ServerMsg variant 9"),
        ("Datagram", "02", "unknown Datagram variant 2"),
        ("ClientMsg", "fc07000000", "unknown variant written wide"),
        ("ClientMsg", "0400", "trailing byte after Stop"),
        ("ClientMsg", "00024a6f1901ff", "trailing byte after Join"),
        ("ClientMsg", "00024a6f1902", "unknown Gender variant 2"),
        ("ClientMsg", "00054a6f1901", "string length past the end"),
        ("ClientMsg", "0001ff1900", "invalid UTF-8 (0xFF)"),
        ("ClientMsg", "0002c0801900", "invalid UTF-8 (overlong NUL)"),
        ("ClientMsg", "0003eda0801900", "invalid UTF-8 (surrogate)"),
        ("ClientMsg", "0002c3", "truncated inside a string"),
        ("ClientMsg", "00024a6f", "truncated before age"),
        ("ClientMsg", "06fb01", "truncated varint"),
        (
            "ClientMsg",
            "06fe00000000000000000000000000000000",
            "u128 varint marker for a u64",
        ),
        ("ClientMsg", "06ff", "reserved varint marker"),
        (
            "ClientMsg",
            "0100fdffffffffffffffff",
            "string length 2^64 - 1",
        ),
        ("ClientMsg", "03000002", "invalid Option tag for sdp_mid"),
        (
            "ClientMsg",
            "030001000001fc0000010000",
            "0xFC marker for a u16 (m-line index)",
        ),
        ("ServerMsg", "00fc01000000ff", "trailing byte after Waiting"),
        ("ServerMsg", "00fd0100000000000000", "0xFD marker for a u32"),
        ("ServerMsg", "00fe", "u128 marker for a u32"),
        (
            "ServerMsg",
            "0101024a6f190102",
            "invalid bool for initiator",
        ),
        ("ServerMsg", "0101024a6f190101", "ice_servers missing"),
        (
            "ServerMsg",
            "0101024a6f19010105",
            "ice_servers length past the end",
        ),
        (
            "ServerMsg",
            "0101024a6f1901010100000200",
            "invalid Option tag for credential",
        ),
        ("ServerMsg", "060800", "unknown ErrorCode variant 8"),
        ("ServerMsg", "0803", "Closing without reason"),
        ("ServerMsg", "05fd", "truncated u64"),
        ("Datagram", "000102036869", "chat text length past the end"),
        ("Datagram", "0001020268", "truncated chat"),
        ("Datagram", "010102ff", "trailing byte after ChatAck"),
    ]
}

/// Frame headers the frame reader must refuse: length 0 and over 65,536.
const BAD_FRAME_HEADERS: [&str; 3] = ["00000000", "00010001", "ffffffff"];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn entry(kind: &str, name: &str, value: Value, bytes: &[u8]) -> Value {
    json!({ "kind": kind, "name": name, "value": value, "hex": hex(bytes) })
}

/// Builds the whole vectors document, checking on the way that every sample
/// decodes back to itself and that every variant of every type is present.
fn build_document() -> Value {
    let mut valid = Vec::new();
    let mut variants: [(&str, usize, BTreeSet<u8>); 3] = [
        ("ClientMsg", 7, BTreeSet::new()),
        ("ServerMsg", 9, BTreeSet::new()),
        ("Datagram", 2, BTreeSet::new()),
    ];
    for (name, msg) in client_samples() {
        let bytes = codec::encode(&msg);
        assert_eq!(codec::decode::<ClientMsg>(&bytes).unwrap(), msg, "{name}");
        variants[0].2.insert(bytes[0]);
        valid.push(entry("ClientMsg", name, client_js(&msg), &bytes));
    }
    for (name, msg) in server_samples() {
        let bytes = codec::encode(&msg);
        assert_eq!(codec::decode::<ServerMsg>(&bytes).unwrap(), msg, "{name}");
        variants[1].2.insert(bytes[0]);
        valid.push(entry("ServerMsg", name, server_js(&msg), &bytes));
    }
    for (name, msg) in datagram_samples() {
        let bytes = codec::encode(&msg);
        assert_eq!(codec::decode::<Datagram>(&bytes).unwrap(), msg, "{name}");
        variants[2].2.insert(bytes[0]);
        valid.push(entry("Datagram", name, datagram_js(&msg), &bytes));
    }
    for (kind, count, seen) in &variants {
        let all: BTreeSet<u8> = (0..*count as u8).collect();
        assert_eq!(seen, &all, "samples must cover every {kind} variant");
    }

    let mut decode_only = Vec::new();
    for (kind, hex_str, value) in decode_only_samples() {
        let bytes = unhex(hex_str);
        let (decoded, reencoded) = match kind {
            "ClientMsg" => {
                let m = codec::decode::<ClientMsg>(&bytes).expect(hex_str);
                (client_js(&m), codec::encode(&m))
            }
            "ServerMsg" => {
                let m = codec::decode::<ServerMsg>(&bytes).expect(hex_str);
                (server_js(&m), codec::encode(&m))
            }
            _ => unreachable!(),
        };
        assert_eq!(decoded, value, "{kind} {hex_str}");
        assert_ne!(
            &reencoded[..],
            &bytes[..],
            "{hex_str} is canonical: make it a valid vector"
        );
        decode_only.push(json!({ "kind": kind, "hex": hex_str, "value": value }));
    }

    let mut invalid = Vec::new();
    for (kind, hex_str, why) in invalid_samples() {
        let bytes = unhex(hex_str);
        let accepted = match kind {
            "ClientMsg" => codec::decode::<ClientMsg>(&bytes).map(|m| format!("{m:?}")),
            "ServerMsg" => codec::decode::<ServerMsg>(&bytes).map(|m| format!("{m:?}")),
            "Datagram" => codec::decode::<Datagram>(&bytes).map(|m| format!("{m:?}")),
            _ => unreachable!(),
        };
        if let Ok(m) = accepted {
            panic!("invalid vector {kind} {hex_str} ({why}) decoded as {m}");
        }
        invalid.push(json!({ "kind": kind, "hex": hex_str, "why": why }));
    }

    for header in BAD_FRAME_HEADERS {
        let mut dec = FrameDecoder::default();
        dec.buffer().extend_from_slice(&unhex(header));
        assert!(dec.next_frame().is_err(), "frame header {header} accepted");
    }

    json!({
        "about": "Generated by tests/golden.rs (UPDATE_GOLDEN=1 cargo test --test golden). \
                  value: the message in web/quicmatch.js's object shape; a u64 above 2^53 - 1 \
                  is written {\"bigint\": \"<decimal>\"}. hex: its bincode bytes, unframed.",
        "valid": valid,
        "decode_only": decode_only,
        "invalid": invalid,
        "bad_frame_headers": BAD_FRAME_HEADERS,
    })
}

#[test]
fn vectors_match_the_rust_codec() {
    let doc = build_document();
    let path = vectors_path();
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_GOLDEN=1 cargo test --test golden",
            path.display()
        )
    });
    let committed: Value = serde_json::from_str(&committed).expect("vectors.json is not JSON");
    if committed == doc {
        return;
    }
    // Point at the first differing entry, so a wire change is easy to see.
    for section in ["valid", "decode_only", "invalid", "bad_frame_headers"] {
        let (want, have) = (&doc[section], &committed[section]);
        if want == have {
            continue;
        }
        let (want, have) = (
            want.as_array().unwrap(),
            have.as_array().cloned().unwrap_or_default(),
        );
        for i in 0..want.len().max(have.len()) {
            if want.get(i) != have.get(i) {
                panic!(
                    "tests/golden/vectors.json is out of date in {section}[{i}]:\n  codec gives: {}\n  file holds:  {}\n\
                     If the wire format changed on purpose, run UPDATE_GOLDEN=1 cargo test --test golden \
                     and update docs/protocol.md and web/quicmatch.js to match.",
                    want.get(i).map_or("(nothing)".into(), Value::to_string),
                    have.get(i).map_or("(nothing)".into(), Value::to_string),
                );
            }
        }
    }
    panic!(
        "tests/golden/vectors.json differs from the codec outside its vectors (the about text?)"
    );
}

#[test]
fn protocol_example_is_in_the_vectors() {
    // The one example docs/protocol.md spells out, pinned independently of the codec.
    let doc = build_document();
    let example = doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "protocol example")
        .expect("protocol example vector");
    assert_eq!(example["hex"], "00024a6f1901");
    assert_eq!(
        example["value"],
        json!({ "type": "Join", "profile": { "name": "Jo", "age": 25, "gender": "Female" } })
    );
}
