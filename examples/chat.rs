//! Text chat with a random stranger from the terminal: the quickest way to
//! see quicmatch work. Start the server (`cargo run --release`), then in two
//! terminals:
//!
//! ```text
//! cargo run --example chat -- --name Ann --age 30 --gender female
//! cargo run --example chat -- --name Bob --age 31 --gender male
//! ```
//!
//! Type a line to send it; `/next` finds someone new, `/quit` leaves.

use clap::{Parser, ValueEnum};
use quicmatch::client::{self, Client, Event};
use quicmatch::protocol::{ClientMsg, Gender, Profile, ServerMsg};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GenderArg {
    Male,
    Female,
}

/// Terminal chat client for a quicmatch server.
#[derive(Debug, Parser)]
struct Args {
    /// Your display name.
    #[arg(long)]
    name: String,
    /// Your age.
    #[arg(long)]
    age: u8,
    /// Your gender; you are matched with someone of the other.
    #[arg(long, value_enum)]
    gender: GenderArg,
    /// The server's HTTP sidecar, asked for the session URL and certificate.
    #[arg(long, default_value = "http://localhost:5000")]
    server: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let discovery = client::discover(&args.server).await?;
    let mut session = Client::connect(&discovery.url, discovery.verification()).await?;
    let gender = match args.gender {
        GenderArg::Male => Gender::Male,
        GenderArg::Female => Gender::Female,
    };
    session
        .send(&ClientMsg::Join(Profile {
            name: args.name,
            age: args.age,
            gender,
        }))
        .await?;
    println!("connected to {}; looking for someone...", discovery.url);

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut current: Option<u64> = None;
    // Chat may overtake its match's `Matched` frame (datagrams and the
    // stream are not ordered): hold it until the match is known.
    let mut early: Vec<(u64, String)> = Vec::new();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                match line.trim() {
                    "/quit" => break,
                    "/next" => session.send(&ClientMsg::Stop).await?,
                    "" => {}
                    text => match current {
                        Some(id) => { session.chat(id, text)?; }
                        None => println!("(nobody to talk to yet)"),
                    },
                }
            }
            event = session.next_event() => match event {
                Some(Event::Message(msg)) => match msg {
                    ServerMsg::Waiting { queue_position } => {
                        current = None;
                        println!("waiting (position {queue_position})");
                    }
                    ServerMsg::Matched { match_id, partner, .. } => {
                        current = Some(match_id);
                        println!("matched with {}, {} — say hi!", partner.name, partner.age);
                        for (_, text) in early.drain(..).filter(|(id, _)| *id == match_id) {
                            println!("> {text}");
                        }
                    }
                    ServerMsg::PartnerDisconnected { .. } => {
                        current = None;
                        println!("your partner left");
                    }
                    ServerMsg::Error { code, message } => println!("error {code:?}: {message}"),
                    ServerMsg::Closing { code, reason } => println!("server closing ({code}): {reason}"),
                    _ => {}
                },
                Some(Event::Chat { match_id, text, .. }) if Some(match_id) == current => {
                    println!("> {text}");
                }
                Some(Event::Chat { match_id, text, .. }) if early.len() < 32 => {
                    early.push((match_id, text));
                }
                Some(Event::ChatLost { .. }) => println!("(a message could not be delivered)"),
                Some(Event::Closed { .. }) | None => {
                    println!("disconnected");
                    break;
                }
                Some(_) => {}
            },
        }
    }
    session.send(&ClientMsg::Leave).await.ok();
    session.close().await;
    Ok(())
}
