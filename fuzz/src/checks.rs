//! One check per fuzz target, each taking the fuzzer's raw bytes and
//! panicking when an invariant breaks. They use only `std`, `serde` and
//! `quicmatch`, so the same file builds in the fuzz package (under libFuzzer,
//! on nightly) and in `tests/fuzz_corpus.rs` (on stable), which replays the
//! checked-in corpus through them.
//!
//! - [`frame_decoder`]: a byte stream cut into arbitrary chunks through
//!   `codec::FrameDecoder`, against a one-shot reference split; every frame's
//!   payload through [`client_msg`]'s checks.
//! - [`client_msg`]: bytes as a `ClientMsg` (and as a `ServerMsg`, which the
//!   native client decodes): what decodes re-encodes to a value that decodes
//!   equal; a `Join`'s profile against the profile rules; a relay message's
//!   byte-rewritten frame against the server's own encoding.
//! - [`datagram`]: bytes as a `Datagram`, the same round trip.
//! - [`registry_ops`]: a sequence of registry operations against a model.
//! - [`webtransport_input`]: what a WebTransport peer sends beside the
//!   signaling stream (HTTP/3 control and CONNECT stream bytes, datagram
//!   prefixes) through `webtransport::wire`.

use std::collections::BTreeMap;
use std::fmt::Debug;

use quicmatch::codec::{self, BadFrameLength, DecodeError, FRAME_HEADER_LEN, FrameDecoder};
use quicmatch::protocol::{
    ClientMsg, DEFAULT_MIN_AGE, Datagram, Gender, MAX_AGE, MAX_FRAME_LEN, MAX_NAME_CHARS, Profile,
    ServerMsg,
};
use quicmatch::registry::{
    AtCapacity, Event, RefusedError, Registry, SessionId, Stats, validate_profile,
};
use quicmatch::webtransport::wire::{
    self, ConnectEvent, ConnectStream, ControlStream, FrameBuffer, RawFrame,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A target's check: panics when the bytes break an invariant.
pub type Check = fn(&[u8]);

/// Every target, by the name of its binary in `fuzz/Cargo.toml` and its
/// corpus directory `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, Check); 5] = [
    ("frame_decoder", frame_decoder),
    ("client_msg", client_msg),
    ("datagram", datagram),
    ("registry_ops", registry_ops),
    ("webtransport_input", webtransport_input),
];

/// The fuzzer's bytes, taken from the front.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Frames

/// Input: `[n] [n+1 chunk sizes] [keep] stream`. The stream is fed to a
/// `FrameDecoder` in chunks of the given sizes (cycled; size byte `b` is
/// `b + 1` bytes, 255 the whole rest), taking every whole frame after each
/// chunk and then calling `shrink_if_empty(keep * 64)`, as the server's
/// reader does.
///
/// Checks: the frames are exactly those a one-shot split of the whole stream
/// finds (so chunking changes nothing), each within the protocol's length
/// limits; no byte is lost or held twice; an impossible length is reported
/// exactly where the split finds it, and nothing is taken after it; an empty
/// buffer keeps at most `keep` bytes of capacity; every payload passes
/// [`client_msg`]'s checks.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input(data);
    let sizes = input.byte() % 8 + 1;
    let mut sizes: Vec<usize> = input
        .take(usize::from(sizes))
        .iter()
        .map(|&b| {
            if b == u8::MAX {
                usize::MAX
            } else {
                usize::from(b) + 1
            }
        })
        .collect();
    if sizes.is_empty() {
        sizes.push(usize::MAX);
    }
    let keep = usize::from(input.byte()) * 64;
    let stream = input.0;
    let (expected, bad) = split_stream(stream);

    let mut decoder = FrameDecoder::default();
    let (mut fed, mut taken, mut frames) = (0, 0, 0);
    for size in sizes.iter().cycle() {
        let end = fed + (*size).min(stream.len() - fed);
        decoder.buffer().extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let len = *expected.get(frames).unwrap_or_else(|| {
                        panic!("frame {frames} at {taken} is not in the stream")
                    });
                    assert_eq!(frame.len(), len, "frame {frames} at {taken}: wrong length");
                    assert_eq!(
                        &frame[..],
                        &stream[taken..taken + len],
                        "frame {frames}: bytes"
                    );
                    check_frame(&frame);
                    taken += len;
                    frames += 1;
                }
                Ok(None) => break,
                Err(BadFrameLength(n)) => {
                    assert_eq!(bad, Some((taken, n)), "bad length reported at {taken}");
                    assert_eq!(frames, expected.len(), "bad length before a whole frame");
                    return;
                }
            }
        }
        assert_eq!(
            decoder.buffer().len(),
            fed - taken,
            "bytes lost or held twice"
        );
        decoder.shrink_if_empty(keep);
        assert_eq!(
            decoder.buffer().len(),
            fed - taken,
            "shrinking dropped bytes"
        );
        assert!(
            !decoder.buffer().is_empty() || decoder.buffer().capacity() <= keep,
            "an empty buffer keeps {} bytes (keep {keep})",
            decoder.buffer().capacity()
        );
        if fed == stream.len() {
            break;
        }
    }
    assert_eq!(frames, expected.len(), "a whole frame was not taken");
    assert_eq!(bad, None, "an impossible length went unreported");
}

/// The reference split of a whole stream: the lengths of its whole frames,
/// and where and what the first impossible length is, if there is one before
/// the stream ends.
fn split_stream(stream: &[u8]) -> (Vec<usize>, Option<(usize, u32)>) {
    let mut lengths = Vec::new();
    let mut at = 0;
    while let Some(header) = stream.get(at..at + FRAME_HEADER_LEN) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if !(1..=MAX_FRAME_LEN).contains(&(len as usize)) {
            return (lengths, Some((at, len)));
        }
        let whole = FRAME_HEADER_LEN + len as usize;
        if stream.len() - at < whole {
            break;
        }
        lengths.push(whole);
        at += whole;
    }
    (lengths, None)
}

/// Checks one whole frame (length prefix included) as the server reads it.
fn check_frame(frame: &[u8]) {
    let payload = codec::frame_payload(frame);
    assert!(
        (1..=MAX_FRAME_LEN).contains(&payload.len()),
        "a frame of {} bytes",
        payload.len()
    );
    assert_eq!(
        frame[..FRAME_HEADER_LEN],
        (payload.len() as u32).to_be_bytes(),
        "the prefix is not the payload's length"
    );
    let Some(msg) = round_trip::<ClientMsg>(payload) else {
        return;
    };
    let relayed = codec::server_relay_frame(&msg, frame);
    match (&msg, relayed) {
        (ClientMsg::Join(profile), None) => check_profile(profile),
        (ClientMsg::Offer { .. } | ClientMsg::Answer { .. } | ClientMsg::Ice { .. }, Some(out)) => {
            let server = codec::decode::<ServerMsg>(codec::frame_payload(&out))
                .unwrap_or_else(|e| panic!("the relayed frame of {msg:?} does not decode: {e}"));
            assert_eq!(
                Some(server),
                msg.clone().into_relayed(),
                "relayed as another message"
            );
            assert_eq!(
                out[..FRAME_HEADER_LEN],
                ((out.len() - FRAME_HEADER_LEN) as u32).to_be_bytes(),
                "the relayed frame's prefix is not its length"
            );
        }
        (ClientMsg::Stop | ClientMsg::Leave | ClientMsg::Ping { .. }, None) => {}
        (msg, relayed) => panic!("{msg:?} relayed as {relayed:?}"),
    }
}

// ---------------------------------------------------------------------------
// Messages

/// Bytes as the payload of a signaling frame (as [`frame_decoder`] checks
/// each frame's), and as a `ServerMsg`, round-tripped.
pub fn client_msg(data: &[u8]) {
    if (1..=MAX_FRAME_LEN).contains(&data.len()) {
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + data.len());
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        check_frame(&frame);
    } else {
        round_trip::<ClientMsg>(data);
    }
    round_trip::<ServerMsg>(data);
}

/// Bytes as a chat datagram, round-tripped. A datagram whose first byte is
/// 1 (the server counts an owed ack by that byte alone) is a `ChatAck`.
pub fn datagram(data: &[u8]) {
    let Some(datagram) = round_trip::<Datagram>(data) else {
        return;
    };
    let (Datagram::Chat { match_id, .. } | Datagram::ChatAck { match_id, .. }) = &datagram;
    assert_eq!(datagram.match_id(), *match_id);
    if data.first() == Some(&1) {
        assert!(
            matches!(datagram, Datagram::ChatAck { .. }),
            "first byte 1 but {datagram:?}"
        );
    }
}

/// Decodes `bytes` as a `T`. What decodes must encode to no more bytes (the
/// encoder writes the shortest forms; the decoder accepts longer ones), decode
/// again to an equal value and encode the same once more, framed or not. A
/// value followed by trailing bytes must decode alone.
fn round_trip<T>(bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match codec::decode::<T>(bytes) {
        Ok(msg) => {
            let encoded = codec::encode(&msg);
            assert!(encoded.len() <= bytes.len(), "{msg:?} re-encoded longer");
            let again: T = codec::decode(&encoded)
                .unwrap_or_else(|e| panic!("{msg:?} re-encoded does not decode: {e}"));
            assert_eq!(again, msg, "re-encoded to another value");
            assert_eq!(codec::encode(&again), encoded, "encoding is not stable");
            let frame = codec::encode_frame(&msg);
            assert_eq!(
                frame[..FRAME_HEADER_LEN],
                (encoded.len() as u32).to_be_bytes()
            );
            assert_eq!(codec::frame_payload(&frame), &encoded[..]);
            Some(msg)
        }
        Err(DecodeError::TrailingBytes(extra)) => {
            assert!((1..bytes.len()).contains(&extra), "{extra} trailing bytes");
            let alone = &bytes[..bytes.len() - extra];
            if let Err(e) = codec::decode::<T>(alone) {
                panic!("a value followed by {extra} bytes does not decode alone: {e}");
            }
            None
        }
        Err(DecodeError::Malformed(_)) => None,
    }
}

/// The profile rules of the protocol (section 4.1), written from the text:
/// a name of 1 to 32 characters after trimming, none of them a control
/// character, and an age from `min_age` to 120.
fn profile_is_valid(profile: &Profile, min_age: u8) -> bool {
    let name = profile.name.trim();
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(char::is_control)
        && (min_age..=MAX_AGE).contains(&profile.age)
}

/// `validate_profile` agrees with the rules, trims the name, keeps the rest,
/// and accepts what it returned.
fn check_profile(profile: &Profile) {
    for min_age in [0, DEFAULT_MIN_AGE, MAX_AGE] {
        match validate_profile(profile.clone(), min_age) {
            Ok(valid) => {
                assert!(profile_is_valid(profile, min_age), "{profile:?} accepted");
                assert_eq!(valid.name, profile.name.trim());
                assert_eq!((valid.age, valid.gender), (profile.age, profile.gender));
                assert_eq!(validate_profile(valid.clone(), min_age), Ok(valid));
            }
            Err(RefusedError::InvalidProfile(_)) => {
                assert!(!profile_is_valid(profile, min_age), "{profile:?} refused");
            }
            Err(other) => panic!("{profile:?} refused as {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Registry

/// One registry operation, as [`registry_ops`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `connect()`.
    Connect,
    /// `join(session, profile)`.
    Join(u8, Profile),
    /// `stop(session)`.
    Stop(u8),
    /// `leave(session)`.
    Leave(u8),
    /// `disconnect(session)`.
    Disconnect(u8),
    /// `take_peak()`.
    TakePeak,
}

/// A session operand picks, modulo their number plus one, a session the
/// registry has handed out (connected or not) or one it never did.
fn pick(issued: &[SessionId], who: u8) -> SessionId {
    issued
        .get(usize::from(who) % (issued.len() + 1))
        .copied()
        .unwrap_or(0)
}

/// Characters a name byte of 0x80 or more stands for (below, the ASCII
/// character itself): multi-byte, whitespace that `trim` removes, controls.
const NAME_CHARS: [char; 8] = [
    'é', 'ß', '😀', '\u{3000}', '\u{85}', '\u{a0}', '\u{200b}', '\u{9f}',
];

impl Op {
    /// Reads one operation: a tag byte, then its operands.
    fn read(input: &mut Input) -> Op {
        let tag = input.byte();
        match tag % 6 {
            0 => Op::Connect,
            1 => {
                let who = input.byte();
                let age = input.byte();
                let len = usize::from(input.byte() % 40);
                let name = input
                    .take(len)
                    .iter()
                    .map(|&b| match b {
                        0..0x80 => char::from(b),
                        _ => NAME_CHARS[usize::from(b) % NAME_CHARS.len()],
                    })
                    .collect();
                let gender = if tag & 0x80 == 0 {
                    Gender::Male
                } else {
                    Gender::Female
                };
                Op::Join(who, Profile { name, age, gender })
            }
            2 => Op::Stop(input.byte()),
            3 => Op::Leave(input.byte()),
            4 => Op::Disconnect(input.byte()),
            _ => Op::TakePeak,
        }
    }

    /// The bytes [`Op::read`] reads back as this operation, for seeds. Name
    /// characters outside ASCII and [`NAME_CHARS`] are written as `?`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Op::Connect => out.push(0),
            Op::Join(who, profile) => {
                out.push(if profile.gender == Gender::Male {
                    1
                } else {
                    0x81
                });
                out.extend([*who, profile.age, profile.name.chars().count() as u8]);
                out.extend(profile.name.chars().map(|c| {
                    match c {
                        '\0'..='\u{7f}' => c as u8,
                        _ => NAME_CHARS
                            .iter()
                            .position(|&n| n == c)
                            .map_or(b'?', |i| 0x80 + i as u8),
                    }
                }));
            }
            Op::Stop(who) => out.extend([2, *who]),
            Op::Leave(who) => out.extend([3, *who]),
            Op::Disconnect(who) => out.extend([4, *who]),
            Op::TakePeak => out.push(5),
        }
    }
}

/// Input: `[cap] [min_age] op...` (see [`Op::read`]), on a registry of at
/// most `cap % 32 + 1` sessions admitting ages from `min_age % 128`.
///
/// Each operation's result (events, refusals, ids, peaks) must equal the
/// model's exactly; the registry's `assert_invariants` and its `stats` (equal
/// to the model's counts) are checked after every operation, and each
/// operation's events on their own: only connected sessions are told
/// anything, each is matched at most once, with a partner of the
/// opposite gender who is told the same match, under a new match id.
pub fn registry_ops(data: &[u8]) {
    let mut input = Input(data);
    let cap = usize::from(input.byte() % 32) + 1;
    let min_age = input.byte() % 128;
    let mut registry = Registry::new(min_age, cap);
    let mut model = Model::new(cap, min_age);
    let mut issued = Vec::new();
    let mut last_match_id = 0;
    while !input.is_empty() {
        let op = Op::read(&mut input);
        let mut gone = None;
        let events = match &op {
            Op::Connect => {
                let id = registry.connect();
                assert_eq!(id, model.connect(), "connect");
                issued.extend(id.ok());
                Vec::new()
            }
            Op::TakePeak => {
                assert_eq!(registry.take_peak(), model.take_peak(), "take_peak");
                Vec::new()
            }
            Op::Join(who, profile) => {
                let id = pick(&issued, *who);
                let got = registry.join(id, profile.clone());
                let want = model.join(id, profile.clone());
                same_outcome(got, want, &op)
            }
            Op::Stop(who) => {
                let id = pick(&issued, *who);
                same_outcome(registry.stop(id), model.stop(id), &op)
            }
            Op::Leave(who) => {
                let id = pick(&issued, *who);
                let events = registry.leave(id);
                assert_eq!(events, model.leave(id), "{op:?}");
                events
            }
            Op::Disconnect(who) => {
                let id = pick(&issued, *who);
                let events = registry.disconnect(id);
                assert_eq!(events, model.disconnect(id), "{op:?}");
                gone = Some(id);
                events
            }
        };
        check_events(&model, gone, &events, &mut last_match_id);
        registry.assert_invariants();
        assert_eq!(registry.stats(), model.stats(), "stats after {op:?}");
    }
}

/// The events of an operation the registry and the model agree on (a
/// refusal must be the same one; an invalid profile's text is not compared).
fn same_outcome(
    got: Result<Vec<Event>, RefusedError>,
    want: Result<Vec<Event>, RefusedError>,
    op: &Op,
) -> Vec<Event> {
    match (got, want) {
        (Err(RefusedError::InvalidProfile(_)), Err(RefusedError::InvalidProfile(_))) => Vec::new(),
        (got, want) => {
            assert_eq!(got, want, "{op:?}");
            got.unwrap_or_default()
        }
    }
}

/// What must hold of one operation's events whatever the model says, given
/// the model's state after it and the session it disconnected, if any (told
/// at most that its own match is over).
fn check_events(after: &Model, gone: Option<SessionId>, events: &[Event], last_match_id: &mut u64) {
    let mut matched = BTreeMap::new();
    for event in events {
        let (Event::Waiting { session, .. }
        | Event::Matched { session, .. }
        | Event::PartnerDisconnected { session, .. }
        | Event::MatchLeft { session, .. }) = event;
        assert!(
            after.sessions.contains_key(session)
                || (gone == Some(*session) && matches!(event, Event::MatchLeft { .. })),
            "{event:?} for a stranger"
        );
        if let Event::Matched {
            session,
            partner,
            match_id,
            partner_profile,
            ..
        } = event
        {
            let Some(Status::Matched { profile, .. }) = after.status(*session) else {
                panic!("{event:?}, but the session is not matched");
            };
            assert_ne!(
                profile.gender, partner_profile.gender,
                "{event:?}: same gender"
            );
            assert!(*match_id > *last_match_id, "{event:?}: an old match id");
            assert!(
                matched.insert(*session, (*partner, *match_id)).is_none(),
                "{session} matched twice in one operation"
            );
        }
    }
    for (session, (partner, match_id)) in &matched {
        assert_eq!(
            matched.get(partner),
            Some(&(*session, *match_id)),
            "{session}'s partner {partner} was told another match"
        );
        *last_match_id = (*last_match_id).max(*match_id);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Idle,
    Waiting(Profile),
    Matched {
        profile: Profile,
        partner: SessionId,
        match_id: u64,
    },
}

/// The registry as the protocol describes it, in the plainest terms: two
/// first-come-first-served lists, and for each session its status and the
/// partner of its last match, which it is not matched with again right away.
#[derive(Debug, Clone)]
struct Model {
    cap: usize,
    min_age: u8,
    /// Connected sessions: status, previous partner.
    sessions: BTreeMap<SessionId, (Status, Option<SessionId>)>,
    /// Waiting sessions, oldest first: men, women.
    queues: [Vec<SessionId>; 2],
    next_id: SessionId,
    next_match_id: u64,
    peak: usize,
}

fn queue_of(gender: Gender) -> usize {
    usize::from(gender == Gender::Female)
}

impl Model {
    fn new(cap: usize, min_age: u8) -> Model {
        Model {
            cap,
            min_age,
            sessions: BTreeMap::new(),
            queues: [Vec::new(), Vec::new()],
            next_id: 1,
            next_match_id: 1,
            peak: 0,
        }
    }

    fn status(&self, id: SessionId) -> Option<&Status> {
        self.sessions.get(&id).map(|(status, _)| status)
    }

    fn set(&mut self, id: SessionId, status: Status) {
        if let Some(entry) = self.sessions.get_mut(&id) {
            entry.0 = status;
        }
    }

    fn connect(&mut self) -> Result<SessionId, AtCapacity> {
        if self.sessions.len() == self.cap {
            return Err(AtCapacity);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sessions.insert(id, (Status::Idle, None));
        self.peak = self.peak.max(self.sessions.len());
        Ok(id)
    }

    fn take_peak(&mut self) -> usize {
        std::mem::replace(&mut self.peak, self.sessions.len())
    }

    fn join(&mut self, id: SessionId, profile: Profile) -> Result<Vec<Event>, RefusedError> {
        match self.status(id) {
            None => Err(RefusedError::NotJoined),
            Some(Status::Idle) if profile_is_valid(&profile, self.min_age) => {
                let mut events = Vec::new();
                let name = profile.name.trim().to_owned();
                self.find_partner(id, Profile { name, ..profile }, &mut events);
                Ok(events)
            }
            Some(Status::Idle) => Err(RefusedError::InvalidProfile(String::new())),
            Some(_) => Err(RefusedError::AlreadyJoined),
        }
    }

    fn stop(&mut self, id: SessionId) -> Result<Vec<Event>, RefusedError> {
        let mut events = Vec::new();
        match self.status(id).cloned() {
            None | Some(Status::Idle) => return Err(RefusedError::NotJoined),
            Some(Status::Waiting(profile)) => {
                let queue = &self.queues[queue_of(profile.gender)];
                let place = queue
                    .iter()
                    .position(|&s| s == id)
                    .expect("waiting, so queued");
                events.push(Event::Waiting {
                    session: id,
                    queue_position: place as u32 + 1,
                });
            }
            Some(Status::Matched { profile, .. }) => {
                let (partner, partner_profile) = self.end_match(id, &mut events);
                self.find_partner(partner, partner_profile, &mut events);
                self.find_partner(id, profile, &mut events);
            }
        }
        Ok(events)
    }

    fn leave(&mut self, id: SessionId) -> Vec<Event> {
        let mut events = Vec::new();
        match self.status(id).cloned() {
            None | Some(Status::Idle) => {}
            Some(Status::Waiting(profile)) => {
                self.queues[queue_of(profile.gender)].retain(|&s| s != id);
                self.set(id, Status::Idle);
            }
            Some(Status::Matched { .. }) => {
                let (partner, partner_profile) = self.end_match(id, &mut events);
                self.find_partner(partner, partner_profile, &mut events);
            }
        }
        events
    }

    fn disconnect(&mut self, id: SessionId) -> Vec<Event> {
        let events = self.leave(id);
        self.sessions.remove(&id);
        events
    }

    /// Ends `id`'s match; both become idle and remember each other. Returns
    /// the partner and its profile.
    fn end_match(&mut self, id: SessionId, events: &mut Vec<Event>) -> (SessionId, Profile) {
        let Some(Status::Matched {
            partner, match_id, ..
        }) = self.status(id).cloned()
        else {
            unreachable!("{id} is matched");
        };
        let Some(Status::Matched { profile, .. }) = self.status(partner).cloned() else {
            unreachable!("{partner} is matched");
        };
        for (a, b) in [(id, partner), (partner, id)] {
            self.sessions.insert(a, (Status::Idle, Some(b)));
        }
        events.push(Event::MatchLeft {
            session: id,
            match_id,
        });
        events.push(Event::PartnerDisconnected {
            session: partner,
            match_id,
        });
        (partner, profile)
    }

    /// Matches an idle `id` with the longest waiting of the opposite gender
    /// who is neither its previous partner nor had it as theirs; else `id`
    /// waits at the back of its own list.
    fn find_partner(&mut self, id: SessionId, profile: Profile, events: &mut Vec<Event>) {
        let previous = |s: SessionId| self.sessions.get(&s).and_then(|(_, p)| *p);
        let others = &self.queues[queue_of(profile.gender.opposite())];
        let found = others
            .iter()
            .position(|&other| previous(id) != Some(other) && previous(other) != Some(id));
        let Some(place) = found else {
            let own = &mut self.queues[queue_of(profile.gender)];
            own.push(id);
            events.push(Event::Waiting {
                session: id,
                queue_position: own.len() as u32,
            });
            self.set(id, Status::Waiting(profile));
            return;
        };
        let waiter = self.queues[queue_of(profile.gender.opposite())].remove(place);
        let Some(Status::Waiting(waiter_profile)) = self.status(waiter).cloned() else {
            unreachable!("{waiter} is queued, so waiting");
        };
        let match_id = self.next_match_id;
        self.next_match_id += 1;
        for (session, partner, initiator, own, theirs) in [
            (waiter, id, true, &waiter_profile, &profile),
            (id, waiter, false, &profile, &waiter_profile),
        ] {
            events.push(Event::Matched {
                session,
                partner,
                match_id,
                initiator,
                partner_profile: theirs.clone(),
            });
            self.set(
                session,
                Status::Matched {
                    profile: own.clone(),
                    partner,
                    match_id,
                },
            );
        }
    }

    fn stats(&self) -> Stats {
        let matched = self
            .sessions
            .values()
            .filter(|(status, _)| matches!(status, Status::Matched { .. }))
            .count();
        Stats {
            active_users: self.sessions.len(),
            active_matches: matched / 2,
            male_queue: self.queues[0].len(),
            female_queue: self.queues[1].len(),
        }
    }
}

// ---------------------------------------------------------------------------
// WebTransport's HTTP/3 input

/// Input: `[what] [chunk] bytes`. `what % 3` says what the bytes are: the
/// peer's control stream after its type byte (0), the CONNECT stream (1,
/// read as the server reads a request and as a client reads a response),
/// or a datagram of the session on stream `4 * chunk` (2). Streams are fed
/// to a `FrameBuffer` in chunks of `chunk + 1` bytes, taking every whole
/// frame after each, as the layer reads them.
///
/// Checks: chunking changes neither the frames nor where an oversized one
/// is refused; every frame is within `MAX_FRAME`; the control stream yields
/// SETTINGS at most once, and only as its first frame; the CONNECT stream
/// yields at most one request, first, and a close only after it, and a
/// status only from a HEADERS frame; a
/// datagram's payload offset is exactly its prefix, a varint naming the
/// session.
pub fn webtransport_input(data: &[u8]) {
    let mut input = Input(data);
    let what = input.byte() % 3;
    let chunk = input.byte();
    let bytes = input.0;
    if what == 2 {
        let stream = u64::from(chunk) * 4;
        let session = wire::session_id(stream).expect("a client bidirectional stream");
        if let Some(offset) = wire::datagram_offset(bytes, session) {
            let prefix = &bytes[..offset];
            assert!((1..=8).contains(&offset), "prefix of {offset} bytes");
            assert_eq!(wire::varint(prefix), Some(stream / 4), "prefix {prefix:?}");
        }
        return;
    }
    let (frames, refused) = h3_frames(bytes, usize::from(chunk) + 1);
    let (whole, whole_refused) = h3_frames(bytes, usize::MAX);
    assert_eq!(frames, whole, "chunking changed the frames");
    assert_eq!(refused, whole_refused, "chunking changed the refusal");
    for (_, payload) in &frames {
        assert!(payload.len() <= wire::MAX_FRAME);
    }
    if what == 0 {
        let mut control = ControlStream::default();
        for (i, frame) in frames.into_iter().enumerate() {
            match control.frame(frame) {
                Ok(Some(_)) => assert_eq!(i, 0, "SETTINGS after the first frame"),
                Ok(None) => assert!(i > 0, "a first frame that is not SETTINGS passed"),
                Err(_) => break,
            }
        }
        return;
    }
    let mut connect = ConnectStream::default();
    let mut requested = false;
    for frame in frames {
        // The same stream as a client reads it, before the session is up.
        if let Ok(Some(_)) = wire::response_status(frame.clone()) {
            assert_eq!(frame.0, 0x01, "a status from a frame that is not HEADERS");
        }
        match connect.frame(frame) {
            Ok(Some(ConnectEvent::Request(headers))) => {
                assert!(!requested, "a second request");
                requested = true;
                if let Ok(request) = wire::session_request(headers) {
                    let _ = (request.path(), request.origin(), request.authority());
                }
            }
            Ok(Some(ConnectEvent::Closed { .. })) => {
                assert!(requested, "closed before the request");
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
    if refused.is_none() {
        assert_eq!(
            connect.finished().is_ok(),
            requested,
            "FIN before the request"
        );
    }
}

/// Whole frames of `bytes` fed `chunk` bytes at a time, and whether (after
/// how many frames) an oversized one was refused.
fn h3_frames(bytes: &[u8], chunk: usize) -> (Vec<RawFrame>, Option<usize>) {
    let mut buffer = FrameBuffer::default();
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk.min(bytes.len()).max(1)) {
        buffer.extend(piece);
        loop {
            match buffer.take() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => {
                    let taken = frames.len();
                    return (frames, Some(taken));
                }
            }
        }
    }
    (frames, None)
}
