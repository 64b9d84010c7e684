//! Decoding a chunked body (RFC 9112 section 7.1) from a buffer that fills as the bytes come:
//! the router's own client reads upstream answers with it (`upstream`). Strict: a chunk size is
//! 1 to 15 hex digits (extensions ignored), every line ends with CRLF, lines are at most
//! [`MAX_LINE`] bytes; trailer fields are read and dropped.

use bytes::{Buf, Bytes, BytesMut};

/// The longest chunk-size or trailer line accepted.
pub(crate) const MAX_LINE: usize = 4096;

/// Where a chunked body's decoder stands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    /// A malformed body: every later step fails the same way.
    Failed(&'static str),
}

/// What the decoder got out of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream's chunked body is malformed: {0}")]
pub(crate) struct ChunkError(&'static str);

/// One CRLF-terminated line off the front of `buf` (without its CRLF), `None` until complete.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, ChunkError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(ChunkError("line too long"))
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(ChunkError("line not ended by CRLF"));
    }
    let line = buf.split_to(end + 1).freeze();
    Ok(Some(line.slice(..end - 1)))
}

impl Chunk {
    /// Decodes what `buf` holds as far as it goes.
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkError> {
        self.advance(buf, false)
    }

    /// Whether the body's end is already in `buf` (read past no data).
    pub(crate) fn at_end(&mut self, buf: &mut BytesMut) -> bool {
        matches!(self.advance(buf, true), Ok(Step::Done))
    }

    fn advance(&mut self, buf: &mut BytesMut, stop_at_data: bool) -> Result<Step, ChunkError> {
        let step = self.advance_inner(buf, stop_at_data);
        if let Err(ChunkError(why)) = step {
            *self = Chunk::Failed(why);
        }
        step
    }

    fn advance_inner(&mut self, buf: &mut BytesMut, stop_at_data: bool) -> Result<Step, ChunkError> {
        loop {
            match self {
                Chunk::Failed(why) => return Err(ChunkError(why)),
                Chunk::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
                        return Err(ChunkError("bad chunk size"));
                    }
                    let size = digits.iter().fold(0u64, |n, &d| {
                        n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))
                    });
                    *self = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() || stop_at_data {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunk::DataEnd;
                    }
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunk::Size;
                }
                Chunk::Trailers => {
                    // Trailer fields are dropped (hop-by-hop here: the client gets the body
                    // re-framed by the router).
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        return Ok(Step::Done);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut chunk = Chunk::Size;
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match chunk.step(&mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::NeedMore => return Ok((out, false)),
                Step::Done => return Ok((out, true)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (body, done) = decode(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n").unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        // Split anywhere, the decoder waits for more.
        let (body, done) = decode(b"5\r\nhel").unwrap();
        assert_eq!((body.as_slice(), done), (&b"hel"[..], false));
        let (_, done) = decode(b"0\r\n").unwrap();
        assert!(!done, "the empty line after the last chunk is still to come");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"10000000000000000\r\n",
            b"-5\r\nhello\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'1'; MAX_LINE + 1];
        assert!(decode(&long).is_err());
    }
}
