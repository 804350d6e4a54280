//! virsh's `net-port-*` commands: a running network's ports (what
//! libvirt's VM drivers create for each `<interface type='network'>`), with
//! virsh 9.0's option names, output and messages (tools/virsh-network.c).
//!
//! One difference by design: where virsh 9.0 reports a failed
//! `net-port-dumpxml` or `net-port-delete` with only "failed to get network
//! port" and exits 0, slipway adds the reason and exits 1.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use slipway_netmgr::portapi::PortCreateFlags;
use slipway_netmgr::proto::{Lookup, Reply, Request};
use slipway_netmgr::ErrorCode;

use super::{read_file, Conn, Failure, FileArg, NetworkArg};

/// A port UUID, positional or as `--port` (virsh takes both).
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PortArg {
    /// Port UUID.
    #[arg(value_name = "PORT")]
    port: Option<String>,
    #[arg(
        long = "port",
        value_name = "PORT",
        help = "The same as PORT, given by name as virsh also takes it"
    )]
    port_named: Option<String>,
}

impl PortArg {
    fn get(self) -> String {
        // clap's group makes one of the two present.
        self.port.or(self.port_named).unwrap_or_default()
    }
}

/// The port commands, named as virsh names them.
#[derive(Subcommand, Debug)]
pub enum PortCommand {
    /// Create a network port from an XML file.
    #[command(name = "net-port-create")]
    Create {
        #[command(flatten)]
        network: NetworkArg,
        #[command(flatten)]
        file: FileArg,
        /// Refuse elements and attributes libvirt's schema does not have.
        #[arg(long)]
        validate: bool,
    },
    /// List network ports.
    #[command(name = "net-port-list")]
    List {
        #[command(flatten)]
        network: NetworkArg,
        /// List UUIDs only.
        #[arg(long)]
        uuid: bool,
        /// List as a table (default).
        #[arg(long)]
        table: bool,
        /// Print the ports as JSON: `[{"uuid": "..."}]` (an error too).
        #[arg(long, conflicts_with_all = ["uuid", "table"])]
        json: bool,
    },
    /// Network port information in XML.
    #[command(name = "net-port-dumpxml")]
    Dumpxml {
        #[command(flatten)]
        network: NetworkArg,
        #[command(flatten)]
        port: PortArg,
    },
    /// Delete the specified network port.
    #[command(name = "net-port-delete")]
    Delete {
        #[command(flatten)]
        network: NetworkArg,
        #[command(flatten)]
        port: PortArg,
    },
}

/// Runs one port command through `conn`.
pub(super) fn exec(conn: &mut Conn, cmd: PortCommand) -> Result<String, Failure> {
    match cmd {
        PortCommand::Create {
            network,
            file,
            validate,
        } => create(conn, &network.get(), &file.get(), validate),
        PortCommand::List {
            network,
            uuid,
            table,
            json,
        } => list(conn, &network.get(), uuid, table, json),
        PortCommand::Dumpxml { network, port } => {
            let (network, port) = (network.get(), port.get());
            port_key(conn, &network, &port)?;
            match conn.call(Request::PortDumpXml {
                network: Lookup::any(&network),
                port: port.clone(),
            }) {
                Ok(Reply::Xml { xml }) => Ok(xml),
                Ok(other) => Err(Failure::one(format!("unexpected reply {other:?}"))),
                Err(e) => Err(port_failure(e, &port, None)),
            }
        }
        PortCommand::Delete { network, port } => {
            let (network, port) = (network.get(), port.get());
            port_key(conn, &network, &port)?;
            match conn.call(Request::PortDelete {
                network: Lookup::any(&network),
                port: port.clone(),
            }) {
                Ok(Reply::Port { port, .. }) => Ok(format!("Network port {} deleted\n", port.uuid)),
                Ok(other) => Err(Failure::one(format!("unexpected reply {other:?}"))),
                Err(e) => Err(port_failure(
                    e,
                    &port,
                    Some(format!("Failed to delete network port {port}")),
                )),
            }
        }
    }
}

/// Looks the network up, then reads the port's UUID, as virsh's
/// `virshCommandOptNetworkPort` does (the UUID is parsed in the client).
fn port_key(conn: &mut Conn, network: &str, port: &str) -> Result<(), Failure> {
    super::info(conn, Lookup::any(network))?;
    slipway_netmgr::portapi::port_uuid(port)
        .map(|_| ())
        .map_err(|e| {
            Failure::lines(vec![
                format!("failed to get network port '{port}'"),
                e.to_string(),
            ])
        })
}

/// virsh's lines for a failed port command: the port lookup that failed,
/// else `context`; then the reason.
fn port_failure(e: slipway_netmgr::Error, port: &str, context: Option<String>) -> Failure {
    let first = match e.code() {
        ErrorCode::PortNotFound => Some(format!("failed to get network port '{port}'")),
        _ => context,
    };
    Failure {
        lines: first.into_iter().chain([e.to_string()]).collect(),
        code: Some(e.code()),
    }
}

fn create(conn: &mut Conn, network: &str, file: &str, validate: bool) -> Result<String, Failure> {
    // virsh looks the network up before it reads the file.
    super::info(conn, Lookup::any(network))?;
    let file = PathBuf::from(file);
    let xml = read_file(&file)?;
    let from = file.display().to_string();
    let req = Request::PortCreate {
        network: Lookup::any(network),
        xml,
        flags: PortCreateFlags {
            reclaim: false,
            validate,
        },
    };
    match conn.call(req) {
        Ok(Reply::Port { port, warnings }) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            Ok(format!("Network port {} created from {from}\n", port.uuid))
        }
        Ok(other) => Err(Failure::one(format!("unexpected reply {other:?}"))),
        // virsh 9.0's wording ("network", not "network port").
        Err(e) => Err(Failure::with(
            e,
            network,
            Some(format!("Failed to create network from {from}")),
        )),
    }
}

fn list(
    conn: &mut Conn,
    network: &str,
    uuid: bool,
    table: bool,
    json: bool,
) -> Result<String, Failure> {
    if uuid && table {
        return Err(Failure::one(
            "Only one argument from --table and --uuid may be specified.",
        ));
    }
    let uuids = match conn.call(Request::PortList {
        network: Lookup::any(network),
    }) {
        Ok(Reply::Ports { uuids }) => uuids,
        Ok(other) => return Err(Failure::one(format!("unexpected reply {other:?}"))),
        Err(e) => return Err(Failure::with(e, network, None)),
    };
    if json {
        let ports: Vec<_> = uuids
            .iter()
            .map(|u| serde_json::json!({ "uuid": u }))
            .collect();
        return Ok(super::to_json(&ports));
    }
    if uuid {
        return Ok(uuids.iter().map(|u| format!("{u}\n")).collect());
    }
    let rows: Vec<Vec<String>> = uuids.into_iter().map(|u| vec![u]).collect();
    Ok(slipway_netmgr::vsh_table(&["UUID"], &rows))
}
