//! The client's frames as they arrive, under tungstenite on every server
//! socket: invalid text fails on its first bad byte, and messages
//! compressed with permessage-deflate are inflated.
//!
//! tungstenite checks a text frame's UTF-8 once it holds the whole frame:
//! a client can send the start of a frame that is already invalid and
//! keep the socket's message buffer growing (up to `max_message_bytes`)
//! for as long as it likes before being told. RFC 6455 §8.1 asks an
//! endpoint to fail the connection as soon as it finds invalid UTF-8, and
//! Autobahn|Testsuite (6.4.3, 6.4.4) grades waiting for the rest of the
//! frame as non-strict. This wrapper follows the client's frames as the
//! bytes go by (header, mask, payload), unmasks each text payload into a
//! small stack buffer and checks it, carrying an incomplete character to
//! the next read. The first read that brings an invalid byte (one no later
//! byte can complete) fails with [`Refused::InvalidText`] instead, and so
//! does every read after it: the socket closes with 1007.
//!
//! tungstenite knows no extensions: it refuses a frame with RSV1 set. When
//! the handshake negotiated permessage-deflate, a compressed message's
//! frames are taken out of the stream here, inflated (within the message
//! size limit: past it the read fails with [`Refused::TooBig`], 1009,
//! whatever the compressed size), and handed on as one plain frame, masked
//! with a zero key, once the message is whole. Everything else is passed
//! on unchanged (when nothing is compressed, in place, without a copy).
//!
//! What it does not judge it leaves to tungstenite: a message that ends in
//! the middle of a character, and every framing error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::deflate::{self, Inflating};

/// Why the client's frames are refused: the error a read fails with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A text message is not UTF-8 (1007).
    InvalidText,
    /// A compressed message inflates past the limit (1009).
    TooBig,
    /// A compressed message is not valid deflate data (1007).
    InvalidDeflate,
    /// A compressed message breaks the framing rules (1002): a new data
    /// message before the compressed one ended, or a compressed one inside
    /// a plain fragmented message.
    Protocol,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::InvalidText => "a text message is not UTF-8",
            Refused::TooBig => "a compressed message inflates past the limit",
            Refused::InvalidDeflate => "a compressed message is not deflate data",
            Refused::Protocol => "a compressed message breaks the framing rules",
        })
    }
}

impl std::error::Error for Refused {}

impl From<deflate::Refusal> for Refused {
    fn from(refusal: deflate::Refusal) -> Self {
        match refusal {
            deflate::Refusal::TooBig => Refused::TooBig,
            deflate::Refusal::Invalid => Refused::InvalidDeflate,
        }
    }
}

/// Why `err` failed a read, when it is one of ours.
pub(crate) fn refused(err: &io::Error) -> Option<Refused> {
    err.get_ref()?.downcast_ref::<Refused>().copied()
}

/// Where the reader is in the client's frames.
#[derive(Debug, Clone, Copy)]
enum At {
    /// In a header: the bytes so far, and how many it has in all (2 until
    /// the second byte says more).
    Header { len: usize, want: usize },
    /// In a payload: how many bytes are left, how far into it (for the
    /// mask), whether it is text to check, and whether it is taken out of
    /// the stream (a compressed message's).
    Payload {
        left: u64,
        offset: usize,
        text: bool,
        taken: bool,
    },
}

/// The frame follower, one per server socket (64 bytes).
#[derive(Debug)]
pub(crate) struct Frames {
    at: At,
    header: [u8; 14],
    mask: [u8; 4],
    /// A fragmented text message is under way (its continuations are
    /// text).
    in_text: bool,
    /// The end of the text so far: an incomplete character (at most 3
    /// bytes) waiting for its continuation bytes.
    carry: [u8; 3],
    carried: u8,
    /// A plain (uncompressed) fragmented data message is under way.
    in_plain: bool,
    /// Why the frames were refused: every read fails from here on.
    failed: Option<Refused>,
    /// With permessage-deflate (boxed: a socket without it pays a word).
    deflate: Option<Box<Deflating>>,
}

/// What a socket with permessage-deflate keeps.
#[derive(Debug, Default)]
struct Deflating {
    /// The limit of an inflated message.
    limit: usize,
    /// The compressed message under way (its state lives only that long).
    inflating: Option<Inflating>,
    /// What tungstenite is to read next, and how much of it it has read.
    ready: Vec<u8>,
    served: usize,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            at: At::Header { len: 0, want: 2 },
            header: [0; 14],
            mask: [0; 4],
            in_text: false,
            carry: [0; 3],
            carried: 0,
            in_plain: false,
            failed: None,
            deflate: None,
        }
    }
}

impl Frames {
    /// Follows `bytes`, passed on unchanged when `out` is `None` (nothing
    /// can be compressed); else what tungstenite is to read goes to `out`.
    pub(crate) fn follow(
        &mut self,
        mut bytes: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<(), Refused> {
        while !bytes.is_empty() {
            if let Some(refused) = self.failed {
                return Err(refused);
            }
            match self.at {
                At::Header { len, want } => {
                    let take = (want - len).min(bytes.len());
                    self.header[len..len + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.at = At::Header {
                        len: len + take,
                        want,
                    };
                    if let Err(refused) = self.header_step(len + take, want, out.as_deref_mut()) {
                        self.failed = Some(refused);
                    }
                }
                At::Payload {
                    left,
                    offset,
                    text,
                    taken,
                } => {
                    let take =
                        usize::try_from(left).map_or(bytes.len(), |left| left.min(bytes.len()));
                    let piece = &bytes[..take];
                    bytes = &bytes[take..];
                    if taken {
                        if let Err(refused) = self.inflate(piece, offset) {
                            self.failed = Some(refused);
                        }
                    } else {
                        if let Some(out) = out.as_deref_mut() {
                            out.extend_from_slice(piece);
                        }
                        if text && !self.check(piece, offset) {
                            self.failed = Some(Refused::InvalidText);
                        }
                    }
                    // `take` fits in u64: it is at most `left`.
                    let left = left - take as u64;
                    self.at = At::Payload {
                        left,
                        offset: (offset + take) % 4,
                        text,
                        taken,
                    };
                    if left == 0
                        && self.failed.is_none()
                        && let Err(refused) = self.frame_done(text, taken, out.as_deref_mut())
                    {
                        self.failed = Some(refused);
                    }
                }
            }
        }
        self.failed.map_or(Ok(()), Err)
    }

    /// Moves on once the header has `len` of its `want` bytes.
    fn header_step(
        &mut self,
        len: usize,
        want: usize,
        out: Option<&mut Vec<u8>>,
    ) -> Result<(), Refused> {
        if len < want {
            return Ok(());
        }
        let masked = self.header[1] & 0x80 != 0;
        let mask_len = if masked { 4 } else { 0 };
        if len == 2 {
            let extended = match self.header[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let want = 2 + extended + mask_len;
            if want > 2 {
                self.at = At::Header { len, want };
                return Ok(());
            }
        }
        let (payload, at) = match self.header[1] & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                4,
            ),
            127 => {
                let mut eight = [0; 8];
                eight.copy_from_slice(&self.header[2..10]);
                (u64::from_be_bytes(eight), 10)
            }
            short => (u64::from(short), 2),
        };
        self.mask = if masked {
            [
                self.header[at],
                self.header[at + 1],
                self.header[at + 2],
                self.header[at + 3],
            ]
        } else {
            [0; 4]
        };
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        let taken = self.takes(opcode, fin)?;
        let mut out = out;
        if !taken && let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(&self.header[..want]);
        }
        let text = match opcode {
            _ if taken => false,
            // A text frame starts a message: nothing carries over.
            1 => {
                self.carried = 0;
                self.in_text = !fin;
                true
            }
            // A continuation is text when its message is.
            0 => {
                let text = self.in_text;
                if fin {
                    self.in_text = false;
                }
                text
            }
            2 => {
                self.in_text = false;
                false
            }
            // Control frames (and reserved opcodes, which tungstenite
            // refuses) leave the message under way alone.
            _ => false,
        };
        self.at = At::Payload {
            left: payload,
            offset: 0,
            text,
            taken,
        };
        if payload == 0 {
            return self.frame_done(text, taken, out);
        }
        Ok(())
    }

    /// Whether the frame with this header is a compressed message's (taken
    /// out of the stream and inflated), starting its inflating state when
    /// it opens one; tracks plain fragmented messages too.
    fn takes(&mut self, opcode: u8, fin: bool) -> Result<bool, Refused> {
        let rsv1 = self.header[0] & 0x40 != 0;
        let Some(Deflating {
            limit, inflating, ..
        }) = self.deflate.as_deref_mut()
        else {
            return Ok(false);
        };
        match opcode {
            1 | 2 if inflating.is_some() => Err(Refused::Protocol),
            1 | 2 if rsv1 => {
                if self.in_plain {
                    return Err(Refused::Protocol);
                }
                *inflating = Some(Inflating::new(opcode, *limit));
                Ok(true)
            }
            1 | 2 => {
                self.in_plain = !fin;
                Ok(false)
            }
            // A continuation of the compressed message (RSV1 is set on the
            // first frame only: tungstenite refuses it on this one).
            0 if inflating.is_some() && !rsv1 => Ok(true),
            0 => {
                if fin {
                    self.in_plain = false;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Inflates masked payload `bytes` starting `offset` into the mask.
    fn inflate(&mut self, bytes: &[u8], offset: usize) -> Result<(), Refused> {
        let Some(Deflating {
            inflating: Some(inflating),
            ..
        }) = self.deflate.as_deref_mut()
        else {
            return Ok(());
        };
        let mut buf = [0u8; 256];
        let mut offset = offset;
        for chunk in bytes.chunks(buf.len()) {
            for (i, byte) in chunk.iter().enumerate() {
                buf[i] = byte ^ self.mask[(offset + i) % 4];
            }
            offset = (offset + chunk.len()) % 4;
            inflating.feed(&buf[..chunk.len()])?;
        }
        Ok(())
    }

    /// A frame's payload is all here.
    fn frame_done(
        &mut self,
        text: bool,
        taken: bool,
        out: Option<&mut Vec<u8>>,
    ) -> Result<(), Refused> {
        if text && !self.in_text {
            // The message is over: whether it ended within a character is
            // tungstenite's to say.
            self.carried = 0;
        }
        self.at = At::Header { len: 0, want: 2 };
        let fin = self.header[0] & 0x80 != 0;
        if !(taken && fin) {
            return Ok(());
        }
        let Some(inflating) = self
            .deflate
            .as_deref_mut()
            .and_then(|deflating| deflating.inflating.take())
        else {
            return Ok(());
        };
        let opcode = inflating.opcode;
        let payload = inflating.finish()?;
        if let Some(out) = out {
            plain_frame(out, opcode, &payload);
        }
        Ok(())
    }

    /// Checks masked text `bytes` that start `offset` bytes into the mask.
    fn check(&mut self, bytes: &[u8], offset: usize) -> bool {
        const CHUNK: usize = 256;
        let mut buf = [0u8; CHUNK + 3];
        let mut offset = offset;
        for chunk in bytes.chunks(CHUNK) {
            let carried = usize::from(self.carried);
            buf[..carried].copy_from_slice(&self.carry[..carried]);
            for (i, byte) in chunk.iter().enumerate() {
                buf[carried + i] = byte ^ self.mask[(offset + i) % 4];
            }
            offset = (offset + chunk.len()) % 4;
            let all = &buf[..carried + chunk.len()];
            let rest = match std::str::from_utf8(all) {
                Ok(_) => &[][..],
                // Invalid whatever comes next.
                Err(e) if e.error_len().is_some() => return false,
                Err(e) => &all[e.valid_up_to()..],
            };
            // An incomplete character is at most 3 bytes.
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carried = u8::try_from(rest.len()).unwrap_or(0);
        }
        true
    }
}

/// `payload` as one final frame with `opcode`, masked with a zero key (a
/// server reads masked frames only), as tungstenite is to read it.
fn plain_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        // Each arm's length fits the field it goes in.
        n if n < 126 => out.push(0x80 | u8::try_from(n).unwrap_or(0)),
        n => match u16::try_from(n) {
            Ok(n) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        },
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

/// A server connection whose reads fail on invalid text and inflate
/// compressed messages (see the module's documentation); writes pass
/// through.
#[derive(Debug)]
pub(crate) struct Incoming<S> {
    inner: S,
    frames: Frames,
}

impl<S> Incoming<S> {
    /// Over `inner`; with permessage-deflate negotiated, compressed
    /// messages inflate up to `deflate_limit` bytes.
    pub(crate) fn new(inner: S, deflate_limit: Option<usize>) -> Self {
        let frames = Frames {
            deflate: deflate_limit.map(|limit| {
                Box::new(Deflating {
                    limit,
                    ..Deflating::default()
                })
            }),
            ..Frames::default()
        };
        Incoming { inner, frames }
    }
}

fn failure(refused: Refused) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, refused)
}

impl<S: AsyncRead + Unpin> AsyncRead for Incoming<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(refused) = this.frames.failed {
            return Poll::Ready(Err(failure(refused)));
        }
        if this.frames.deflate.is_none() {
            // Nothing is taken out: the bytes pass in place.
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            return Poll::Ready(
                this.frames
                    .follow(&buf.filled()[before..], None)
                    .map_err(failure),
            );
        }
        loop {
            let Some(deflating) = this.frames.deflate.as_deref_mut() else {
                return Poll::Ready(Ok(()));
            };
            if deflating.served < deflating.ready.len() {
                let (ready, served) = (&mut deflating.ready, &mut deflating.served);
                let n = buf.remaining().min(ready.len() - *served);
                buf.put_slice(&ready[*served..*served + n]);
                *served += n;
                if *served == ready.len() {
                    *served = 0;
                    if ready.capacity() > 64 << 10 {
                        // An inflated message's room is not kept once read.
                        *ready = Vec::new();
                    } else {
                        ready.clear();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            let mut ready = std::mem::take(&mut deflating.ready);
            let mut chunk = [0u8; 1024];
            let mut read = ReadBuf::new(&mut chunk);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let followed = match polled {
                Poll::Ready(Ok(())) if read.filled().is_empty() => None,
                Poll::Ready(Ok(())) => Some(this.frames.follow(read.filled(), Some(&mut ready))),
                _ => Some(Ok(())),
            };
            if let Some(deflating) = this.frames.deflate.as_deref_mut() {
                deflating.ready = ready;
            }
            match (polled, followed) {
                (Poll::Pending, _) => return Poll::Pending,
                (Poll::Ready(Err(e)), _) => return Poll::Ready(Err(e)),
                // The end of the stream.
                (_, None) => return Poll::Ready(Ok(())),
                (_, Some(Err(refused))) => return Poll::Ready(Err(failure(refused))),
                (_, Some(Ok(()))) => {}
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Incoming<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`, FIN and `opcode` as given.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | u8::try_from(n).unwrap()),
            n if n < 1 << 16 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&u64::try_from(n).unwrap().to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Follows `wire` in pieces of `step` bytes: the index of the piece
    /// that failed, if one did.
    fn failing_piece(wire: &[u8], step: usize) -> Option<usize> {
        let mut frames = Frames::default();
        wire.chunks(step)
            .position(|piece| frames.follow(piece, None).is_err())
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn valid_text_in_any_pieces_passes() {
        let text = "κόσμε, hello, 𝄞 and more ".repeat(40);
        let mut wire = frame(true, 1, text.as_bytes(), MASK);
        // Fragmented, with a ping between the fragments, and binary that is
        // not UTF-8.
        let (a, b) = text.as_bytes().split_at(7);
        wire.extend(frame(false, 1, a, MASK));
        wire.extend(frame(true, 9, b"\xff\xfe", MASK));
        wire.extend(frame(true, 0, b, MASK));
        wire.extend(frame(true, 2, &[0xff; 300], MASK));
        wire.extend(frame(true, 1, &[], MASK));
        for step in [1, 2, 3, 5, 7, 64, 1000, wire.len()] {
            assert_eq!(failing_piece(&wire, step), None, "step {step}");
        }
    }

    #[test]
    fn invalid_text_fails_at_the_byte_that_makes_it_so() {
        // Autobahn 6.4.3: "κόσμε" then a code point past U+10FFFF, then more.
        let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
        let wire = frame(true, 1, payload, MASK);
        let header = wire.len() - payload.len();
        // `\xf4\x90` can start nothing: the piece with `\x90` fails.
        let bad = header + 12;
        assert_eq!(failing_piece(&wire, 1), Some(bad));
        // In a fragmented message, across the fragments.
        let mut wire = frame(false, 1, &payload[..12], MASK);
        assert_eq!(failing_piece(&wire, 1), None);
        wire.extend(frame(true, 0, &payload[12..], MASK));
        assert_eq!(
            failing_piece(&wire, 1),
            Some(wire.len() - payload.len() + 12)
        );
        // In a 64 KiB frame (16-bit length), far from the start.
        let mut long = vec![b'a'; 70_000];
        long[50_000] = 0xc0;
        assert!(failing_piece(&frame(true, 1, &long, MASK), 4096).is_some());
        // Binary and control frames are not text.
        assert_eq!(failing_piece(&frame(true, 2, payload, MASK), 1), None);
        assert_eq!(
            failing_piece(&frame(true, 8, b"\x03\xe8\xff", MASK), 1),
            None
        );
    }

    #[test]
    fn a_message_ending_mid_character_is_left_to_tungstenite() {
        let mut wire = frame(true, 1, b"ab\xe2\x82", MASK);
        wire.extend(frame(true, 1, b"\xacok", MASK));
        // The second message starts afresh: a lone continuation byte is
        // invalid there.
        assert_eq!(failing_piece(&wire, 1), Some(wire.len() - 3));
    }
}
