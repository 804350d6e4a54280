//! Parsing client messages.
//!
//! Hand-written on purpose: dhcproto 0.15's option decoder panics on some malformed
//! options (debug assertions on option lengths) and silently stops at others, and
//! this parser faces whatever a guest sends. It walks the options with bounds checks
//! and keeps only what the server acts on. Replies are still encoded with dhcproto.

use std::net::Ipv4Addr;

use slipway_dns::HostName;

/// Why a request could not be handled: it is not a well-formed DHCP client message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    /// Shorter than the fixed BOOTP header and magic cookie.
    #[error("DHCP message is {0} bytes, shorter than the 240-byte header")]
    Truncated(usize),
    /// The `op` field is not BOOTREQUEST (1).
    #[error("DHCP message op is {0}, not BOOTREQUEST (1)")]
    NotBootRequest(u8),
    /// Not Ethernet (`htype` 1, `hlen` 6).
    #[error("DHCP message hardware type {htype}/length {hlen}: only Ethernet (1/6) is served")]
    UnsupportedHardware {
        /// The `htype` field.
        htype: u8,
        /// The `hlen` field.
        hlen: u8,
    },
    /// The magic cookie is wrong (a plain BOOTP or garbage message).
    #[error("DHCP magic cookie is {0:02x?}, not 63:82:53:63")]
    BadMagic([u8; 4]),
    /// An option is malformed.
    #[error("DHCP option {code} at byte {offset}: {reason}")]
    BadOption {
        /// The option code.
        code: u8,
        /// Where the option starts in the message.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No option 53 (plain BOOTP is not served).
    #[error("DHCP message has no message type (option 53)")]
    MissingMessageType,
    /// A message type a client does not send to a server (OFFER, ACK, ...).
    #[error("DHCP message type {0} is not a client request")]
    UnexpectedMessageType(u8),
    /// A REQUEST naming no address at all (no option 50, no `ciaddr`).
    #[error("DHCPREQUEST names no address (neither option 50 nor ciaddr)")]
    RequestWithoutAddress,
}

/// Fixed part of a BOOTP message, up to and including the magic cookie.
const HEADER_LEN: usize = 240;
/// The DHCP magic cookie (RFC 2131 section 3).
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// DHCP message types (option 53, RFC 2132 9.6) a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientMessage {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

/// The parts of a client message the server acts on.
#[derive(Debug)]
pub(crate) struct Request {
    pub kind: ClientMessage,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub mac: [u8; 6],
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 12, when it holds a valid host name (its first label; see
    /// [`HostName`]); an invalid one is logged and left out.
    pub hostname: Option<HostName>,
    /// Option 61, when not empty.
    pub client_id: Option<Vec<u8>>,
    /// Option 55: the option codes the client asks for, in its order.
    pub parameters: Vec<u8>,
    /// Option 57.
    pub max_message_size: Option<u16>,
}

impl Request {
    /// Whether the client asked for broadcast replies (RFC 2131 flags field).
    pub fn broadcast_flag(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

fn ipv4(value: &[u8], code: u8, offset: usize) -> Result<Ipv4Addr, DhcpError> {
    <[u8; 4]>::try_from(value)
        .map(Ipv4Addr::from)
        .map_err(|_| DhcpError::BadOption {
            code,
            offset,
            reason: "length is not 4",
        })
}

fn word(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}

/// Checks and parses a client message (a UDP payload sent to port 67).
pub(crate) fn parse(bytes: &[u8]) -> Result<Request, DhcpError> {
    if bytes.len() < HEADER_LEN {
        return Err(DhcpError::Truncated(bytes.len()));
    }
    if bytes[0] != 1 {
        return Err(DhcpError::NotBootRequest(bytes[0]));
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(DhcpError::UnsupportedHardware {
            htype: bytes[1],
            hlen: bytes[2],
        });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[236..HEADER_LEN]);
    if magic != MAGIC_COOKIE {
        return Err(DhcpError::BadMagic(magic));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[28..34]);

    let mut kind = None;
    let mut requested = None;
    let mut server_id = None;
    let mut hostname: Option<Vec<u8>> = None;
    let mut client_id: Option<Vec<u8>> = None;
    let mut parameters = Vec::new();
    let mut max_message_size = None;

    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let code = bytes[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = bytes.get(at + 1) else {
            return Err(DhcpError::BadOption {
                code,
                offset: at,
                reason: "no length byte",
            });
        };
        let end = at + 2 + usize::from(len);
        let Some(value) = bytes.get(at + 2..end) else {
            return Err(DhcpError::BadOption {
                code,
                offset: at,
                reason: "runs past the end of the message",
            });
        };
        match code {
            53 => {
                let [t] = value else {
                    return Err(DhcpError::BadOption {
                        code,
                        offset: at,
                        reason: "length is not 1",
                    });
                };
                kind = Some(*t);
            }
            50 => requested = Some(ipv4(value, code, at)?),
            54 => server_id = Some(ipv4(value, code, at)?),
            57 => {
                let [hi, lo] = value else {
                    return Err(DhcpError::BadOption {
                        code,
                        offset: at,
                        reason: "length is not 2",
                    });
                };
                max_message_size = Some(u16::from_be_bytes([*hi, *lo]));
            }
            // RFC 3396: a repeated option continues the previous one.
            12 => hostname
                .get_or_insert_with(Vec::new)
                .extend_from_slice(value),
            61 => client_id
                .get_or_insert_with(Vec::new)
                .extend_from_slice(value),
            55 => parameters.extend_from_slice(value),
            _ => {}
        }
        at = end;
    }

    let kind = match kind {
        None => return Err(DhcpError::MissingMessageType),
        Some(1) => ClientMessage::Discover,
        Some(3) => ClientMessage::Request,
        Some(4) => ClientMessage::Decline,
        Some(7) => ClientMessage::Release,
        Some(8) => ClientMessage::Inform,
        Some(other) => return Err(DhcpError::UnexpectedMessageType(other)),
    };
    Ok(Request {
        kind,
        xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        flags: u16::from_be_bytes([bytes[10], bytes[11]]),
        ciaddr: word(bytes, 12),
        giaddr: word(bytes, 24),
        mac,
        requested,
        server_id,
        hostname: hostname.and_then(|h| {
            HostName::from_client(&h)
                .inspect_err(|e| tracing::info!("DHCP client name ignored: {e}"))
                .ok()
        }),
        client_id: client_id.filter(|id| !id.is_empty()),
        parameters,
        max_message_size,
    })
}
