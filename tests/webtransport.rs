//! The server's WebTransport layer (`quicmatch::webtransport`) on its own,
//! with real clients (the server's own tests exercise it through the whole
//! server):
//!
//! - `layer_with_the_wtransport_client`: an in-process server on the layer
//!   against wtransport's own client: a stream and a datagram echoed, 403 /
//!   404 / 429 answers, a second stream refused with 0x10, a server close
//!   whose code and reason the client sees, a client close the server sees.
//! - `layer_with_its_own_client`: the same server against the layer's
//!   client (`ClientSession`, the load generator's): 403 / 429 / 404 seen
//!   as statuses, a stream and a datagram echoed, both closes seen with
//!   their code and reason.
//! - `native_client_through_thin_floor`: two `quicmatch::client::Client`s
//!   (the crate's native client, on wtransport's client) through
//!   `examples/thin_floor.rs`: joined, matched, offer and answer relayed,
//!   a chat datagram delivered and acknowledged, ping.
//! - `chromium_through_thin_floor` / `firefox_through_thin_floor`: headless
//!   browsers open WebTransport sessions to thin_floor with
//!   `serverCertificateHashes` and run `tests/webtransport/browser_harness.js`.
//!   Skipped (with a `SKIPPED` line) without the browser.
//!
//! thin_floor is the example binary that `cargo test` builds beside this
//! test (`target/<profile>/examples/thin_floor`), run on 127.0.0.1 port 0.

#[path = "common/required.rs"]
#[allow(dead_code)]
mod required;
#[path = "browser/setup.rs"]
#[allow(dead_code)]
mod setup;
#[path = "browser/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use quicmatch::client::{Client, Event, Verification};
use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
use quicmatch::webtransport::{self, ClientError, ClientSession, Closed};
use quicmatch::{tls, transport};
use serde_json::Value;
use tokio::time::timeout;
use webdriver::{Browser, Driver};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint, VarInt};

/// What tests/browser/setup.rs reads (the network-namespace child of the
/// browser tests; never set here).
const NETNS_ENV: &str = "QUICMATCH_IN_NETNS";

/// Bound on every single wait.
const STEP: Duration = Duration::from_secs(10);

/// A running `examples/thin_floor`, killed on drop.
struct ThinFloor {
    child: Child,
    url: String,
    hash_b64: String,
}

impl ThinFloor {
    fn start() -> Result<ThinFloor> {
        let exe = std::env::current_exe()?;
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .context("test binary's directory")?;
        // THIN_TEST_SERVER=floor_server runs the same checks against the
        // wtransport floor, for comparison.
        let name = std::env::var("THIN_TEST_SERVER").unwrap_or_else(|_| "thin_floor".into());
        let bin: PathBuf = profile_dir.join("examples").join(name);
        ensure!(bin.is_file(), "{} is not built", bin.display());
        let mut child = Command::new(&bin)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        // "thin floor server on https://127.0.0.1:PORT/signal, certificate hash HASH"
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("https://"))
            .context("url")?
            .trim_end_matches(',')
            .to_owned();
        let hash_b64 = line.split_whitespace().last().context("hash")?.to_owned();
        Ok(ThinFloor {
            child,
            url,
            hash_b64,
        })
    }

    fn hash(&self) -> [u8; 32] {
        base64::engine::general_purpose::STANDARD
            .decode(&self.hash_b64)
            .expect("base64")
            .try_into()
            .expect("32 bytes")
    }
}

impl Drop for ThinFloor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The layer itself, with wtransport's client

/// Serves the layer on 127.0.0.1: `/echo` echoes its stream and datagrams
/// (and closes with 4242 "closing now" when told "close"), `/forbidden`
/// and `/busy` are refused with 403 and 429, anything else 404. How each
/// accepted session ended goes to `ended`.
async fn echo_server(
    ended: tokio::sync::mpsc::UnboundedSender<Closed>,
) -> Result<(String, [u8; 32], wtransport::quinn::Endpoint)> {
    let identity = tls::self_signed(&[], tls::SELF_SIGNED_VALIDITY)?;
    let socket = transport::bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 1 << 20)?;
    let config = webtransport::server_config(
        tls::server_tls_config(&identity.identity)?,
        transport::transport_config(Duration::from_secs(30), Duration::from_secs(10))?,
    )?;
    let endpoint = webtransport::endpoint(socket, config)?;
    let url = format!("https://{}", endpoint.local_addr()?);
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                let Ok(Ok(request)) = timeout(STEP, webtransport::handshake(incoming)).await else {
                    return;
                };
                match request.path() {
                    "/echo" => {}
                    "/forbidden" => return request.forbidden().await,
                    "/busy" => return request.too_many_requests().await,
                    _ => return request.not_found().await,
                }
                let Ok(mut session) = request.accept().await else {
                    return;
                };
                let Ok((mut send, mut recv)) = session.accept_stream().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                loop {
                    tokio::select! {
                        read = recv.read(&mut buf) => match read {
                            Ok(Some(n)) if &buf[..n] == b"close" => {
                                session.close(4242, b"closing now");
                            }
                            Ok(Some(n)) => {
                                let _ = send.write_all(&buf[..n]).await;
                            }
                            _ => {}
                        },
                        event = session.next() => match event {
                            webtransport::Event::Datagram(datagram) => {
                                let _ = session.send_datagram(&datagram);
                            }
                            webtransport::Event::Stream(..) => {}
                            webtransport::Event::Closed(closed) => {
                                let _ = ended.send(closed);
                                return;
                            }
                        },
                    }
                }
            });
        }
    });
    Ok((url, identity.pinned_hash.expect("self-signed"), endpoint))
}

fn client_endpoint(
    hash: [u8; 32],
) -> Result<Endpoint<wtransport::endpoint::endpoint_side::Client>> {
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([Sha256Digest::new(hash)])
        .build();
    Ok(Endpoint::client(config)?)
}

/// Whether quinn saw the connection closed by the application with `code`
/// and `reason`; `what` names the check in the error.
fn closed_with(
    error: &wtransport::quinn::ConnectionError,
    code: u32,
    reason: &[u8],
    what: &str,
) -> Result<()> {
    match error {
        wtransport::quinn::ConnectionError::ApplicationClosed(close) => ensure!(
            close.error_code == wtransport::quinn::VarInt::from_u32(code)
                && &close.reason[..] == reason,
            "{what}: {error:?}"
        ),
        other => anyhow::bail!("{what}: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_with_the_wtransport_client() -> Result<()> {
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let (url, hash, server) = echo_server(ended_tx).await?;
    let client = client_endpoint(hash)?;

    // Refusals: the client sees the session rejected.
    for path in ["/forbidden", "/busy", "/nowhere"] {
        let result = timeout(STEP, client.connect(format!("{url}{path}"))).await?;
        match result {
            Err(wtransport::error::ConnectingError::SessionRejected) => {}
            other => anyhow::bail!("{path}: expected a rejection, got {other:?}"),
        }
    }

    // A session: stream echo, datagram echo.
    let connection = timeout(STEP, client.connect(format!("{url}/echo"))).await??;
    let (mut send, mut recv) = timeout(STEP, connection.open_bi()).await??.await?;
    send.write_all(b"hello").await?;
    let mut buf = [0u8; 64];
    let n = timeout(STEP, recv.read(&mut buf)).await??.context("echo")?;
    ensure!(&buf[..n] == b"hello", "stream echo: {:?}", &buf[..n]);
    let mut echoed = None;
    for _ in 0..10 {
        connection.send_datagram(b"a datagram")?;
        if let Ok(Ok(datagram)) =
            timeout(Duration::from_millis(300), connection.receive_datagram()).await
        {
            echoed = Some(datagram.payload().to_vec());
            break;
        }
    }
    ensure!(
        echoed.as_deref() == Some(&b"a datagram"[..]),
        "datagram echo: {echoed:?}"
    );

    // A second bidirectional stream is refused with 0x10.
    let (mut send2, mut recv2) = timeout(STEP, connection.open_bi()).await??.await?;
    let _ = send2.write_all(b"more").await;
    let read2 = timeout(STEP, recv2.read(&mut buf)).await?;
    match read2 {
        Err(wtransport::error::StreamReadError::Reset(code)) => {
            ensure!(code == VarInt::from_u32(0x10), "reset code {code}")
        }
        other => anyhow::bail!("extra stream: expected a reset, got {other:?}"),
    }
    // The first stream still works.
    send.write_all(b"still here").await?;
    let n = timeout(STEP, recv.read(&mut buf)).await??.context("echo")?;
    ensure!(&buf[..n] == b"still here", "stream echo after the refusal");

    // The server closes: the client sees its code and reason.
    send.write_all(b"close").await?;
    let error = timeout(STEP, connection.closed()).await?;
    match &error {
        wtransport::error::ConnectionError::ApplicationClosed(close) => ensure!(
            close.code() == VarInt::from_u32(4242) && close.reason() == b"closing now",
            "close as the client saw it: {error:?}"
        ),
        other => anyhow::bail!("close as the client saw it: {other:?}"),
    }
    let closed = timeout(STEP, ended.recv())
        .await?
        .context("server side ended")?;
    ensure!(matches!(closed, Closed::Lost(_)), "server side: {closed:?}");

    // The client closes: the server sees it.
    let connection = timeout(STEP, client.connect(format!("{url}/echo"))).await??;
    let (mut send, mut recv) = timeout(STEP, connection.open_bi()).await??.await?;
    send.write_all(b"x").await?;
    timeout(STEP, recv.read(&mut buf)).await??;
    connection.close(VarInt::from_u32(7), b"bye");
    let closed = timeout(STEP, ended.recv())
        .await?
        .context("server side ended")?;
    match &closed {
        Closed::Lost(lost) => closed_with(lost, 7, b"bye", "client close as the server saw it")?,
        other => anyhow::bail!("client close as the server saw it: {other:?}"),
    }

    server.close(0u32.into(), b"");
    Ok(())
}

// ---------------------------------------------------------------------------
// The layer's own client against its server

/// A session of the layer's own client at the echo server's `/echo`, with
/// one stream open.
async fn echo_session(
    client: &wtransport::quinn::Endpoint,
    addr: std::net::SocketAddr,
    url: &str,
) -> Result<(
    ClientSession,
    wtransport::quinn::SendStream,
    wtransport::quinn::RecvStream,
)> {
    let session = timeout(
        STEP,
        ClientSession::connect(client, addr, &format!("{url}/echo")),
    )
    .await??;
    let (send, recv) = timeout(STEP, session.open_bi()).await??;
    Ok((session, send, recv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_with_its_own_client() -> Result<()> {
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let (url, hash, server) = echo_server(ended_tx).await?;
    let addr = server.local_addr()?;
    let socket = transport::bind_udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 1 << 20)?;
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([Sha256Digest::new(hash)])
        .build();
    let client = webtransport::client_endpoint(socket, &config)?;

    // Refusals carry the server's status.
    for (path, status) in [("/forbidden", 403), ("/busy", 429), ("/nowhere", 404)] {
        let result = timeout(
            STEP,
            ClientSession::connect(&client, addr, &format!("{url}{path}")),
        )
        .await?;
        match result {
            Err(ClientError::Refused(got)) => ensure!(got == status, "{path}: status {got}"),
            other => anyhow::bail!("{path}: expected {status}, got {other:?}"),
        }
    }

    // A session: stream echo, datagram echo.
    let (session, mut send, mut recv) = echo_session(&client, addr, &url).await?;
    send.write_all(b"hello").await?;
    let mut buf = [0u8; 64];
    let n = timeout(STEP, recv.read(&mut buf)).await??.context("echo")?;
    ensure!(&buf[..n] == b"hello", "stream echo: {:?}", &buf[..n]);
    let mut echoed = None;
    for _ in 0..10 {
        session.send_datagram(b"a datagram")?;
        if let Ok(Ok(datagram)) = timeout(Duration::from_millis(300), session.read_datagram()).await
        {
            echoed = Some(datagram.to_vec());
            break;
        }
    }
    ensure!(
        echoed.as_deref() == Some(&b"a datagram"[..]),
        "datagram echo: {echoed:?}"
    );

    // The server closes: the client sees its code and reason.
    send.write_all(b"close").await?;
    let error = timeout(STEP, session.connection().closed()).await?;
    closed_with(&error, 4242, b"closing now", "close as the client saw it")?;
    let closed = timeout(STEP, ended.recv())
        .await?
        .context("server side ended")?;
    ensure!(matches!(closed, Closed::Lost(_)), "server side: {closed:?}");

    // The client closes: the server sees its code and reason.
    let (session, mut send, mut recv) = echo_session(&client, addr, &url).await?;
    send.write_all(b"x").await?;
    timeout(STEP, recv.read(&mut buf)).await??;
    session.close(7, b"bye");
    let closed = timeout(STEP, ended.recv())
        .await?
        .context("server side ended")?;
    match &closed {
        Closed::Lost(lost) => closed_with(lost, 7, b"bye", "client close as the server saw it")?,
        other => anyhow::bail!("client close as the server saw it: {other:?}"),
    }

    server.close(0u32.into(), b"");
    Ok(())
}

// ---------------------------------------------------------------------------
// The native client through thin_floor

/// The next signaling message other than `Waiting`, within [`STEP`].
async fn next_message(client: &mut Client) -> Result<ServerMsg> {
    loop {
        match timeout(STEP, client.next_event())
            .await?
            .context("closed")?
        {
            Event::Message(ServerMsg::Waiting { .. }) => {}
            Event::Message(msg) => return Ok(msg),
            other => anyhow::bail!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_client_through_thin_floor() -> Result<()> {
    let floor = ThinFloor::start()?;
    let verification = Verification::CertificateHashes(vec![floor.hash()]);
    let mut ann = timeout(STEP, Client::connect(&floor.url, verification.clone())).await??;
    let mut bob = timeout(STEP, Client::connect(&floor.url, verification)).await??;
    ann.send(&ClientMsg::Ping { nonce: 9 }).await?;
    ensure!(next_message(&mut ann).await? == ServerMsg::Pong { nonce: 9 });

    let profile = |name: &str, gender| Profile {
        name: name.to_owned(),
        age: 30,
        gender,
    };
    ann.send(&ClientMsg::Join(profile("Ann", Gender::Female)))
        .await?;
    bob.send(&ClientMsg::Join(profile("Bob", Gender::Male)))
        .await?;
    let (
        ServerMsg::Matched {
            match_id,
            initiator: ann_starts,
            ..
        },
        ServerMsg::Matched { match_id: bobs, .. },
    ) = (next_message(&mut ann).await?, next_message(&mut bob).await?)
    else {
        anyhow::bail!("both should be matched");
    };
    ensure!(match_id == bobs, "one match");
    let (offerer, answerer) = if ann_starts {
        (&mut ann, &mut bob)
    } else {
        (&mut bob, &mut ann)
    };
    let sdp = "v=0 ".repeat(500);
    offerer
        .send(&ClientMsg::Offer {
            match_id,
            sdp: sdp.clone(),
        })
        .await?;
    ensure!(
        next_message(answerer).await?
            == ServerMsg::Offer {
                match_id,
                sdp: sdp.clone()
            }
    );
    answerer
        .send(&ClientMsg::Answer {
            match_id,
            sdp: "answer".into(),
        })
        .await?;
    ensure!(
        next_message(offerer).await?
            == ServerMsg::Answer {
                match_id,
                sdp: "answer".into()
            }
    );

    // Chat over datagrams, acknowledged by the partner's client.
    let seq = ann.chat(match_id, "hi Bob")?;
    let mut got_chat = false;
    let mut acked = false;
    let deadline = tokio::time::Instant::now() + STEP;
    while !(got_chat && acked) {
        tokio::select! {
            event = bob.next_event() => match event.context("bob closed")? {
                Event::Chat { text, .. } => { ensure!(text == "hi Bob"); got_chat = true; }
                other => anyhow::bail!("bob: {other:?}"),
            },
            event = ann.next_event() => match event.context("ann closed")? {
                Event::ChatAcked { seq: got, .. } => { ensure!(got == seq); acked = true; }
                other => anyhow::bail!("ann: {other:?}"),
            },
            _ = tokio::time::sleep_until(deadline) => anyhow::bail!("chat: delivered {got_chat}, acked {acked}"),
        }
    }
    ann.close().await;
    bob.close().await;
    drop(floor);
    Ok(())
}

// ---------------------------------------------------------------------------
// Browsers through thin_floor

const HARNESS: &str = include_str!("webtransport/browser_harness.js");

fn browser_through_thin_floor(browser: Browser) {
    if !setup::ready(browser) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let floor = ThinFloor::start().expect("thin_floor");
        // The module's own page origin (http://localhost is a secure context).
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("bind [::1]");
        let page_url = format!("http://localhost:{}/", listener.local_addr().unwrap().port());
        let web = tokio::spawn(async move {
            axum::serve(listener, quicmatch::web_assets::router()).await
        });
        let profile = tempdir(browser.name());
        let driver = Driver::start_browser(browser).await.expect("driver");
        let page = driver.new_page("thin", &profile).await.expect("browser");
        let result = async {
            page.goto(&page_url).await?;
            let script = format!(
                "return import('/quicmatch.js').then((m) => ({HARNESS})(m, arguments[0], arguments[1]));"
            );
            let url = floor.url.clone();
            let report = page
                .execute(&script, vec![Value::from(url), Value::from(floor.hash_b64.as_str())])
                .await?;
            eprintln!("{} through thin_floor: {report}", browser.name());
            ensure!(report["matched"] == serde_json::json!(["Matched", "Matched", true]), "{report}");
            ensure!(report["offer"]["type"] == "Offer" && report["offer"]["sdpLen"] == 2000 && report["offer"]["sameMatch"] == true, "{report}");
            ensure!(report["chat"]["text"] == "hello over a datagram", "chat datagram: {report}");
            ensure!(report["pong"]["nonce"] == 42, "{report}");
            ensure!(report["extra"].as_str().unwrap_or("").starts_with("refused"), "extra stream: {report}");
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            eprintln!("page log: {}", page.page_log().await);
        }
        page.close().await;
        drop(driver);
        let _ = std::fs::remove_dir_all(&profile);
        web.abort();
        drop(floor);
        result.expect("browser check");
    });
}

fn tempdir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thin-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn chromium_through_thin_floor() {
    browser_through_thin_floor(Browser::Chromium);
}

#[test]
fn firefox_through_thin_floor() {
    browser_through_thin_floor(Browser::Firefox);
}
