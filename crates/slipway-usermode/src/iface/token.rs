//! Event-loop tokens: which handler (and which of its entries) a host
//! socket belongs to, packed into a `mio` [`Token`].

use mio::Token;

/// What a host socket registered with the event loop belongs to.
///
/// A [`Token`] carries the kind in its top bits and the handler's own table
/// index below, so the event loop dispatches without a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum TokenKind {
    /// The VM link (listener or connection); index chosen by the attachment.
    Attach = 1,
    /// A translated TCP connection's host socket.
    TcpFlow = 2,
    /// A TCP host-forward listener.
    TcpListener = 3,
    /// A UDP flow's host socket.
    UdpFlow = 4,
    /// A UDP host-forward socket.
    UdpListener = 5,
    /// An ICMP echo socket.
    Icmp = 6,
    /// A control or API socket (also the signal descriptor).
    Control = 7,
    /// A socket of the DNS relay toward the upstream resolvers.
    Dns = 8,
    /// A listener (TCP) or bound socket (UDP) on the served namespace's
    /// loopback (pasta's `-T`/`-U`).
    NsListener = 9,
    /// One side of a TCP connection relayed from the namespace's loopback
    /// to the host's (index: the relay's slot times two, plus the side).
    NsTcp = 10,
    /// The host side of a UDP flow from the namespace's loopback.
    NsUdp = 11,
}

const TOKEN_KIND_SHIFT: u32 = 48;

/// The token for entry `index` of a handler of kind `kind`.
pub fn token(kind: TokenKind, index: usize) -> Token {
    Token(((kind as usize) << TOKEN_KIND_SHIFT) | (index & ((1 << TOKEN_KIND_SHIFT) - 1)))
}

/// Splits a token made by [`token`] back into kind and index.
pub fn decode_token(t: Token) -> Option<(TokenKind, usize)> {
    let index = t.0 & ((1 << TOKEN_KIND_SHIFT) - 1);
    let kind = match t.0 >> TOKEN_KIND_SHIFT {
        1 => TokenKind::Attach,
        2 => TokenKind::TcpFlow,
        3 => TokenKind::TcpListener,
        4 => TokenKind::UdpFlow,
        5 => TokenKind::UdpListener,
        6 => TokenKind::Icmp,
        7 => TokenKind::Control,
        8 => TokenKind::Dns,
        9 => TokenKind::NsListener,
        10 => TokenKind::NsTcp,
        11 => TokenKind::NsUdp,
        _ => return None,
    };
    Some((kind, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for kind in [
            TokenKind::Attach,
            TokenKind::TcpFlow,
            TokenKind::Control,
            TokenKind::Dns,
            TokenKind::NsTcp,
        ] {
            assert_eq!(decode_token(token(kind, 12345)), Some((kind, 12345)));
        }
        assert_eq!(decode_token(Token(0)), None);
    }
}
