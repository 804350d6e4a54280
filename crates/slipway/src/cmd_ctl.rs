//! `slipway ctl`: the client of a running stack's control API
//! (`slipway user --api PATH`; protocol in docs/usermode-api.md).
//!
//! The subcommands are the API's requests ([`Request`], derived with its
//! `clap` feature); the reply is printed as text, or as the reply's JSON
//! with `--json`. An error reply exits with status 1.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use slipway_usermode::api::{ApiClient, Reply, Request, WireMessage};

/// Arguments of `slipway ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The control API socket of the stack (its `--api PATH`).
    #[arg(long, value_name = "PATH")]
    pub api: PathBuf,

    /// Print the reply as JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// What to ask the stack: the API's requests are the subcommands.
    #[command(subcommand)]
    pub command: Request,
}

/// Sends one request and prints the reply.
pub fn run(args: CtlArgs) -> anyhow::Result<i32> {
    let mut client = ApiClient::connect(&args.api)?;
    let reply = client
        .call(&args.command)
        .with_context(|| format!("request to {}", args.api.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    }
    let reply = match reply {
        WireMessage::Ok(reply) => reply,
        WireMessage::Error(e) => {
            eprintln!("error: {}", e.message);
            return Ok(1);
        }
    };
    if !args.json {
        print!("{}", render(&reply));
    }
    Ok(0)
}

/// The text form of a reply: one line per item, columns separated by
/// spaces, easy to read and to `grep`.
fn render(reply: &Reply) -> String {
    let mut out = String::new();
    match reply {
        Reply::Added { forward } => out += &format!("added {forward}\n"),
        Reply::Removed { forward } => out += &format!("removed {forward}\n"),
        Reply::Forwards { forwards } => {
            for f in forwards {
                out += &format!("{f}\n");
            }
        }
        Reply::Leases { leases } => {
            for l in leases {
                let expires = l
                    .expires_in_secs
                    .map_or("never".to_string(), |s| format!("{s}s"));
                out += &format!(
                    "{} {} {} expires={expires}\n",
                    l.mac,
                    l.ip,
                    l.hostname.as_deref().unwrap_or("-")
                );
            }
        }
        Reply::Flows { flows } => {
            for f in flows {
                out += &format!(
                    "{} {} -> {} from_guest={} to_guest={} age={}s\n",
                    f.protocol, f.guest, f.remote, f.bytes_from_guest, f.bytes_to_guest, f.age_secs
                );
            }
        }
        Reply::Counters(c) => {
            out += &format!(
                "frames_in {}\nframes_out {}\nbytes_in {}\nbytes_out {}\n",
                c.frames_in, c.frames_out, c.bytes_in, c.bytes_out
            );
            for (reason, n) in &c.drops {
                out += &format!("drop {reason} {n}\n");
            }
        }
    }
    out
}
