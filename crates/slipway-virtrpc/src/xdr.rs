//! XDR (RFC 4506) encoding and decoding of the types libvirt's remote
//! protocol uses: 32- and 64-bit integers, booleans as ints, fixed opaque
//! data (UUIDs), bounded strings, optional values (`T *`) and bounded
//! arrays. The leaf of the crate: it imports nothing of it.
//!
//! Hand-written: the Rust XDR crates (`serde-xdr`, `xdr-codec`) have had no
//! release for years, and the dozen primitives libvirt's `.x` files use for
//! the network driver fit in this file; every length read from the wire is
//! checked against its bound and against the bytes left before anything is
//! allocated.

/// A decoding failure: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The data ends inside a value.
    #[error("truncated XDR data: {want} bytes needed at offset {at}, {left} left")]
    Truncated {
        /// Bytes the value needs.
        want: usize,
        /// Offset of the value.
        at: usize,
        /// Bytes left.
        left: usize,
    },
    /// A string or array is longer than its declared bound.
    #[error("XDR {what} of length {len} exceeds its maximum {max}")]
    TooLong {
        /// "string" or "array".
        what: &'static str,
        /// The length on the wire.
        len: u32,
        /// The bound.
        max: u32,
    },
    /// An optional-value or boolean discriminant other than 0 or 1.
    #[error("bad XDR discriminant {0} (expected 0 or 1)")]
    BadDiscriminant(u32),
    /// A string that is not UTF-8.
    #[error("XDR string is not UTF-8")]
    NotUtf8,
    /// Padding bytes that are not zero.
    #[error("non-zero XDR padding at offset {0}")]
    BadPadding(usize),
}

/// Reads XDR values from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if self.remaining() < n {
            return Err(XdrError::Truncated {
                want: n,
                at: self.pos,
                left: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// An unsigned int.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An int.
    pub fn i32(&mut self) -> Result<i32, XdrError> {
        Ok(self.u32()? as i32)
    }

    /// An unsigned hyper.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// A bool (an int that is 0 or 1).
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(XdrError::BadDiscriminant(n)),
        }
    }

    /// Fixed-length opaque data of `N` bytes (plus padding).
    pub fn opaque_fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        self.padding(N)?;
        Ok(out)
    }

    fn padding(&mut self, len: usize) -> Result<(), XdrError> {
        let pad = (4 - len % 4) % 4;
        let at = self.pos;
        if self.take(pad)?.iter().any(|b| *b != 0) {
            return Err(XdrError::BadPadding(at));
        }
        Ok(())
    }

    /// A string of at most `max` bytes, which must be UTF-8.
    pub fn string(&mut self, max: u32) -> Result<String, XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong {
                what: "string",
                len,
                max,
            });
        }
        let bytes = self.take(len as usize)?;
        self.padding(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| XdrError::NotUtf8)
    }

    /// An optional value (`T *`): a bool, then the value when true.
    pub fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Option<T>, XdrError> {
        if self.bool()? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A variable-length array of at most `max` elements; each element
    /// takes at least `min_size` bytes, so a length the data cannot hold is
    /// refused before anything is allocated.
    pub fn array<T>(
        &mut self,
        max: u32,
        min_size: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Vec<T>, XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong {
                what: "array",
                len,
                max,
            });
        }
        let need = (len as usize).saturating_mul(min_size.max(1));
        if need > self.remaining() {
            return Err(XdrError::Truncated {
                want: need,
                at: self.pos,
                left: self.remaining(),
            });
        }
        (0..len).map(|_| read(self)).collect()
    }
}

/// Writes XDR values into a growing buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// An unsigned int.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An int.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.u32(v as u32)
    }

    /// An unsigned hyper.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A hyper.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(v as u64)
    }

    /// A bool.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    fn pad(&mut self, len: usize) {
        let pad = (4 - len % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Fixed-length opaque data.
    pub fn opaque_fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self.pad(v.len());
        self
    }

    /// A string (the caller keeps it within the protocol's bound).
    pub fn string(&mut self, v: &str) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v.as_bytes());
        self.pad(v.len());
        self
    }

    /// An optional string (`remote_string`).
    pub fn opt_string(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(s) => self.bool(true).string(s),
            None => self.bool(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let mut w = Writer::new();
        w.u32(7)
            .i32(-2)
            .u64(1 << 40)
            .string("abcde")
            .opt_string(None)
            .opaque_fixed(&[9; 16]);
        let bytes = w.into_bytes();
        // "abcde" takes 4 + 5 + 3 bytes of padding.
        assert_eq!(bytes.len(), 4 + 4 + 8 + 12 + 4 + 16);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.i32().unwrap(), -2);
        assert_eq!(r.u64().unwrap(), 1 << 40);
        assert_eq!(r.string(10).unwrap(), "abcde");
        assert_eq!(r.optional(|r| r.string(10)).unwrap(), None);
        assert_eq!(r.opaque_fixed::<16>().unwrap(), [9; 16]);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn bad_lengths_are_refused_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.into_bytes();
        assert!(matches!(
            Reader::new(&bytes).string(100),
            Err(XdrError::TooLong { len: u32::MAX, .. })
        ));
        assert!(matches!(
            Reader::new(&bytes).array(u32::MAX, 4, |r| r.u32()),
            Err(XdrError::Truncated { .. })
        ));
        let mut w = Writer::new();
        w.u32(3).opaque_fixed(b"ab\x00\x01");
        let bytes = w.into_bytes();
        // Length 3, then "ab\0" and a non-zero padding byte.
        assert_eq!(Reader::new(&bytes).string(10), Err(XdrError::BadPadding(7)));
        assert_eq!(
            Reader::new(&[0, 0, 0, 2]).bool(),
            Err(XdrError::BadDiscriminant(2))
        );
        assert!(matches!(
            Reader::new(&[0, 0]).u32(),
            Err(XdrError::Truncated {
                want: 4,
                at: 0,
                left: 2
            })
        ));
    }
}
