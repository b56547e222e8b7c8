//! The protocol's bytes: bincode 2 (`config::standard()`) for messages, and the
//! 4-byte big-endian length prefix that frames them on the signaling stream.
//!
//! Every encode and decode in the crate goes through this module, so the wire
//! format could be swapped in one place.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use crate::protocol::{ClientMsg, MAX_FRAME_LEN};

/// Bytes of the length prefix in front of every signaling frame.
pub const FRAME_HEADER_LEN: usize = 4;

/// The decoder's allocation limit. bincode counts decoded values at their
/// in-memory size (8 bytes for every `u64` and every length, however few
/// bytes their varints take), so a full 65,536-byte frame can claim a little
/// more than it holds; twice a frame leaves ample room for any valid message
/// while still bounding what a forged length can make the decoder allocate.
const DECODE_LIMIT: usize = 2 * MAX_FRAME_LEN;

type WireConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
>;

/// bincode's standard configuration, with a decode limit of [`DECODE_LIMIT`].
const CONFIG: WireConfig = bincode::config::standard().with_limit::<DECODE_LIMIT>();

/// A message whose bytes did not decode to exactly one value.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// bincode rejected the bytes (unknown variant, bad UTF-8, bad tag, short input...).
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    /// The value ended before the bytes did.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// A frame length that cannot be skipped: the stream is unusable after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame length {0} is outside 1..=65536")]
pub struct BadFrameLength(pub u32);

/// Encodes one message (unframed, as in a datagram).
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail, and our types always serialize.
    let _ = bincode::serde::encode_into_std_write(msg, &mut out, CONFIG);
    Bytes::from(out)
}

/// Encodes one message as a signaling frame: length prefix, then the message.
pub fn encode_frame<T: Serialize>(msg: &T) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let _ = bincode::serde::encode_into_std_write(msg, &mut out, CONFIG);
    let len = (out.len() - FRAME_HEADER_LEN) as u32;
    out[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Bytes::from(out)
}

/// Decodes bytes that must hold exactly one message and nothing more.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (msg, used) = bincode::serde::decode_from_slice(bytes, CONFIG)?;
    match bytes.len() - used {
        0 => Ok(msg),
        extra => Err(DecodeError::TrailingBytes(extra)),
    }
}

/// The payload of a whole frame (the bytes after its length prefix).
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    frame.get(FRAME_HEADER_LEN..).unwrap_or_default()
}

/// The frame that relays a client's `Offer`, `Answer` or `Ice` (`msg`,
/// decoded from `frame`) to its partner as the `ServerMsg` of the same name;
/// `None` for any other message.
///
/// The two enums list these variants with identical fields, one index apart
/// (1..=3 and 2..=4), so the client's bytes are copied and only the variant
/// byte changes. The copy is exact-sized: a queued relay never pins the
/// reader's larger buffer. A variant index in a long varint form (bincode
/// accepts `FB 01 00` for 1) is re-encoded instead.
pub fn server_relay_frame(msg: &ClientMsg, frame: &[u8]) -> Option<Bytes> {
    if !matches!(
        msg,
        ClientMsg::Offer { .. } | ClientMsg::Answer { .. } | ClientMsg::Ice { .. }
    ) {
        return None;
    }
    if let Some(tag @ 1..=3) = frame.get(FRAME_HEADER_LEN).copied() {
        let mut out = BytesMut::with_capacity(frame.len());
        out.extend_from_slice(frame);
        if let Some(byte) = out.get_mut(FRAME_HEADER_LEN) {
            *byte = tag + 1;
        }
        return Some(out.freeze());
    }
    msg.clone()
        .into_relayed()
        .map(|relayed| encode_frame(&relayed))
}

/// Splits a byte stream into frames, sans I/O: bytes go in through
/// [`FrameDecoder::buffer`], whole frames come out of [`FrameDecoder::next_frame`].
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// Bytes received so far and not yet taken as frames; read into it.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes the next whole frame (length prefix included), if one has arrived.
    ///
    /// A length of 0 or over [`MAX_FRAME_LEN`] is an error the stream cannot
    /// recover from: the caller must close the session.
    pub fn next_frame(&mut self) -> Result<Option<BytesMut>, BadFrameLength> {
        let Some(header) = self.buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let len = (&header[..]).get_u32();
        if len == 0 || len as usize > MAX_FRAME_LEN {
            return Err(BadFrameLength(len));
        }
        let total = FRAME_HEADER_LEN + len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total)))
    }

    /// Frees the buffer's memory when it holds nothing, so an idle session
    /// keeps no frame-sized allocation around.
    pub fn shrink_if_empty(&mut self, keep: usize) {
        if self.buf.is_empty() && self.buf.capacity() > keep {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;
    use bytes::BufMut;

    #[test]
    fn join_matches_the_protocol_example() {
        let msg = ClientMsg::Join(Profile {
            name: "Jo".into(),
            age: 25,
            gender: Gender::Female,
        });
        assert_eq!(&encode(&msg)[..], &[0x00, 0x02, 0x4A, 0x6F, 0x19, 0x01]);
        assert_eq!(decode::<ClientMsg>(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn varints_follow_the_table() {
        let ping = |n| encode(&ClientMsg::Ping { nonce: n }).to_vec();
        assert_eq!(ping(250), vec![6, 250]);
        assert_eq!(ping(251), vec![6, 0xFB, 251, 0]);
        assert_eq!(ping(65_536), vec![6, 0xFC, 0, 0, 1, 0]);
        assert_eq!(ping(1 << 32), vec![6, 0xFD, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn frame_has_big_endian_length() {
        let frame = encode_frame(&ClientMsg::Stop);
        assert_eq!(&frame[..], &[0, 0, 0, 1, 4]);
    }

    #[test]
    fn rejects_trailing_bytes_bad_bool_bad_option_and_bad_utf8() {
        assert!(matches!(
            decode::<ClientMsg>(&[4, 0]),
            Err(DecodeError::TrailingBytes(1))
        ));
        // Datagram::Chat with invalid UTF-8 text.
        assert!(decode::<Datagram>(&[0, 1, 1, 1, 0xFF]).is_err());
        // Ice with an Option tag of 2.
        assert!(decode::<ClientMsg>(&[3, 1, 0, 2]).is_err());
        // ServerMsg::Matched with initiator = 2.
        assert!(decode::<ServerMsg>(&[1, 1, 1, b'a', 20, 0, 2, 0]).is_err());
        // Unknown variant.
        assert!(decode::<ClientMsg>(&[7]).is_err());
        // A string length claiming more bytes than there are.
        assert!(decode::<ClientMsg>(&[1, 1, 0xFC, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn decodes_a_message_filling_the_largest_frame() {
        let msg = ClientMsg::Offer {
            match_id: 1,
            sdp: "s".repeat(MAX_FRAME_LEN - 5),
        };
        let frame = encode_frame(&msg);
        assert_eq!(frame.len(), FRAME_HEADER_LEN + MAX_FRAME_LEN);
        assert_eq!(decode::<ClientMsg>(frame_payload(&frame)).unwrap(), msg);
    }

    #[test]
    fn relay_rewrite_equals_server_encoding() {
        let cand = IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        let pairs = [
            (
                ClientMsg::Offer {
                    match_id: 300,
                    sdp: "v=0".into(),
                },
                ServerMsg::Offer {
                    match_id: 300,
                    sdp: "v=0".into(),
                },
            ),
            (
                ClientMsg::Answer {
                    match_id: 7,
                    sdp: "a".into(),
                },
                ServerMsg::Answer {
                    match_id: 7,
                    sdp: "a".into(),
                },
            ),
            (
                ClientMsg::Ice {
                    match_id: 9,
                    candidate: cand.clone(),
                },
                ServerMsg::Ice {
                    match_id: 9,
                    candidate: cand,
                },
            ),
        ];
        for (client, server) in pairs {
            let frame = encode_frame(&client);
            assert_eq!(
                server_relay_frame(&client, &frame),
                Some(encode_frame(&server))
            );
            // The same message with its variant index in the long form.
            let mut long = vec![0, 0, 0, 0, 0xFB];
            long.extend_from_slice(&[frame[4], 0]);
            long.extend_from_slice(&frame[5..]);
            let len = (long.len() - 4) as u32;
            long[..4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(decode::<ClientMsg>(&long[4..]).unwrap(), client);
            assert_eq!(
                server_relay_frame(&client, &long),
                Some(encode_frame(&server))
            );
        }
        assert_eq!(
            server_relay_frame(&ClientMsg::Stop, &encode_frame(&ClientMsg::Stop)),
            None
        );
    }

    #[test]
    fn decoder_splits_frames_across_reads() {
        let mut dec = FrameDecoder::default();
        let a = encode_frame(&ClientMsg::Ping { nonce: 1 });
        let b = encode_frame(&ClientMsg::Leave);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        for byte in &all[..3] {
            dec.buffer().put_u8(*byte);
            assert_eq!(dec.next_frame(), Ok(None));
        }
        dec.buffer().extend_from_slice(&all[3..]);
        assert_eq!(&dec.next_frame().unwrap().unwrap()[..], &a[..]);
        assert_eq!(&dec.next_frame().unwrap().unwrap()[..], &b[..]);
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn decoder_rejects_zero_and_oversized_lengths() {
        let mut dec = FrameDecoder::default();
        dec.buffer().extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(dec.next_frame(), Err(BadFrameLength(0)));
        let mut dec = FrameDecoder::default();
        dec.buffer().extend_from_slice(&65_537u32.to_be_bytes());
        assert_eq!(dec.next_frame(), Err(BadFrameLength(65_537)));
        let mut dec = FrameDecoder::default();
        dec.buffer().extend_from_slice(&65_536u32.to_be_bytes());
        assert_eq!(dec.next_frame(), Ok(None));
    }
}
