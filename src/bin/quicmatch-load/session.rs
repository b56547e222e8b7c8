//! The generator's own minimal client session: a WebTransport session and
//! its signaling stream, read and written from the task that owns it.
//!
//! Not [`quicmatch::client::Client`]: that runs a driver task and a resend
//! timer per session, over wtransport's client, which adds a worker task
//! and channels per connection. Here the session is the thin
//! [`ClientSession`] over quinn, one task drives a pair or a session and
//! nothing else runs, which keeps the generator's cost low when it shares
//! the machine with the server. Frames and datagrams still go through
//! [`quicmatch::codec`].

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use quicmatch::codec::{self, FrameDecoder, encode_frame};
use quicmatch::protocol::{ClientMsg, Gender, ServerMsg};
use quicmatch::webtransport::ClientSession;
use tokio::io::AsyncReadExt;
use wtransport::quinn::{RecvStream, SendStream};

use crate::loopback::{ClientEndpoint, Target};
use crate::pacer::Pacer;
use crate::shared::Shared;

/// The gender of session `index`: even ones are women, odd ones men.
pub fn gender_of(index: u32) -> Gender {
    if index.is_multiple_of(2) {
        Gender::Female
    } else {
        Gender::Male
    }
}

/// The name session `index` joins with, from which its partner learns its index.
pub fn name_of(index: u32) -> String {
    format!("s{index}")
}

/// The session index a partner's name stands for, if it is one of ours.
pub fn index_of(name: &str) -> Option<u32> {
    name.strip_prefix('s')?.parse().ok()
}

/// One session of the generator's own minimal client.
pub struct Session {
    /// Generator-wide number: its name is `s{index}`, even ones are women.
    pub index: u32,
    /// The WebTransport session (chat datagrams go straight through it).
    pub connection: ClientSession,
    /// The signaling stream, client to server.
    send: SendStream,
    /// The signaling stream, server to client.
    recv: RecvStream,
    /// Splits `recv` into frames.
    decoder: FrameDecoder,
    /// Paces frames to `--frame-rate`.
    pub frames: Pacer,
}

impl Session {
    /// Opens session `index` at `target` from `endpoint`, and its signaling
    /// stream; frames are paced to `frame_rate`.
    pub async fn open(
        endpoint: &ClientEndpoint,
        target: &Target,
        index: u32,
        frame_rate: u32,
    ) -> anyhow::Result<Session> {
        let connection = ClientSession::connect(endpoint, target.addr, &target.url)
            .await
            .with_context(|| format!("session {index}: connect"))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .with_context(|| format!("session {index}: open stream"))?;
        Ok(Session {
            index,
            connection,
            send,
            recv,
            decoder: FrameDecoder::default(),
            frames: Pacer::new(frame_rate),
        })
    }

    /// Sends a frame once the pacer allows.
    pub async fn send(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        self.frames.ready().await;
        self.send_now(msg).await
    }

    /// Sends a frame without pacing (the caller has waited for the pacer).
    pub async fn send_now(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        self.send
            .write_all(&encode_frame(msg))
            .await
            .with_context(|| format!("session {}: write", self.index))
    }

    /// The next frame from the server; `Closing` and a closed stream are errors.
    pub async fn next_msg(&mut self) -> anyhow::Result<ServerMsg> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let msg = codec::decode::<ServerMsg>(codec::frame_payload(&frame))
                        .with_context(|| format!("session {}: undecodable frame", self.index))?;
                    if let ServerMsg::Closing { code, reason } = msg {
                        bail!(
                            "session {}: server closed it with code {code}: {reason}",
                            self.index
                        );
                    }
                    return Ok(msg);
                }
                Ok(None) => {}
                Err(bad) => bail!("session {}: {bad}", self.index),
            }
            let n = self
                .recv
                .read_buf(self.decoder.buffer())
                .await
                .with_context(|| format!("session {}: read", self.index))?;
            ensure!(
                n > 0,
                "session {}: the server finished the stream",
                self.index
            );
        }
    }

    /// Sends `Ping { nonce }` and reads up to its `Pong`, handing every other
    /// message to `other`: afterwards every frame the server queued for this
    /// session before it read the ping has been seen.
    pub async fn ping(
        &mut self,
        nonce: u64,
        mut other: impl FnMut(ServerMsg),
    ) -> anyhow::Result<()> {
        self.send(&ClientMsg::Ping { nonce }).await?;
        loop {
            match self.next_msg().await? {
                ServerMsg::Pong { nonce: got } if got == nonce => return Ok(()),
                msg => other(msg),
            }
        }
    }

    /// [`Session::ping`] for at most `wait`, at the end of a scenario: a
    /// failure or a timeout counts as an error of `who`.
    pub async fn final_ping(
        &mut self,
        nonce: u64,
        wait: Duration,
        who: &str,
        shared: &Shared,
        other: impl FnMut(ServerMsg),
    ) {
        match tokio::time::timeout(wait, self.ping(nonce, other)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => shared.error(format!("{who}: final ping: {error:#}")),
            Err(_) => shared.error(format!("{who}: final ping timed out")),
        }
    }

    /// Closes the session with code 0, as a client leaving should.
    pub fn close(&self) {
        self.connection.close(0, b"load test done");
    }
}
