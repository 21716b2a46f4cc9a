//! RESP request framing and reply encoding.
//!
//! Requests are what Redis servers accept: arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands (`PING\r\n`).
//! Parsing is resumable (a command that arrives in many reads is scanned
//! once) and bounded: argument counts, bulk lengths, line lengths and the
//! bytes one command may occupy all have caps, and anything malformed is a
//! [`ProtocolError`], never a panic.
//!
//! Hand-written rather than taken from `redis-protocol`: that crate decodes
//! general reply frames (nested aggregates of every type) without size caps
//! or inline commands, and restarts from the first byte on every partial
//! read; a server only needs the narrow, capped request grammar below.

use bytes::{Buf, Bytes, BytesMut};
use std::ops::Range;

/// Limits on what one request may contain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most arguments in one command (Redis allows 1024 * 1024).
    pub max_args: usize,
    /// Longest single argument.
    pub max_bulk: usize,
    /// Longest inline command line.
    pub max_inline: usize,
    /// Most bytes one command may occupy on the wire.
    pub max_command: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_args: 1024 * 1024,
            max_bulk: super::MAX_VALUE_BYTES,
            max_inline: 64 * 1024,
            max_command: 64 * 1024 * 1024,
        }
    }
}

/// Input that is not a valid request; the connection answers with an error
/// and closes, as Redis does, since the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub(crate) struct ProtocolError(pub String);

/// Numeric header lines (`*N`, `$N`) longer than this are garbage.
const MAX_INT_LINE: usize = 32;

/// Arguments at least this long are sliced out of the read buffer instead of
/// copied: a copy costs more than it saves, and the value dominates the
/// allocation it keeps alive. Smaller ones are copied so that a stored
/// 3-byte value does not pin a whole read buffer in the memtable.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// A multibulk command seen in part.
#[derive(Debug)]
struct Partial {
    /// Arguments the header announced.
    expected: usize,
    /// Where each complete argument lies in the buffer.
    args: Vec<Range<usize>>,
    /// Where parsing resumes.
    pos: usize,
}

/// A resumable request parser for one connection.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    limits: Limits,
    partial: Option<Partial>,
    /// The buffer must be at least this long before parsing can progress.
    need: usize,
}

impl Parser {
    /// A parser with the given limits.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            partial: None,
            need: 0,
        }
    }

    /// Takes the next complete command off the front of `buf`: `Ok(None)`
    /// means more bytes are needed. Empty commands (`*0`, blank lines) are
    /// skipped, so a returned command has at least one argument.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if buf.is_empty() || buf.len() < self.need {
                return Ok(None);
            }
            let parsed = if self.partial.is_some() || buf[0] == b'*' {
                self.multibulk(buf)?
            } else {
                self.inline(buf)?
            };
            match parsed {
                None => return Ok(None),
                Some(args) if args.is_empty() => continue,
                Some(args) => return Ok(Some(args)),
            }
        }
    }

    fn multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some((n, next)) = int_line(buf, 1)? else {
                    self.need = buf.len() + 1;
                    return Ok(None);
                };
                if n <= 0 {
                    buf.advance(next);
                    self.need = 0;
                    return Ok(Some(Vec::new()));
                }
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > self.limits.max_args {
                    return Err(ProtocolError("invalid multibulk length".into()));
                }
                Partial {
                    expected: n,
                    args: Vec::with_capacity(n.min(64)),
                    pos: next,
                }
            }
        };
        while p.args.len() < p.expected {
            if p.pos > self.limits.max_command {
                return Err(ProtocolError("command too large".into()));
            }
            if p.pos >= buf.len() {
                self.need = p.pos + 1;
                self.partial = Some(p);
                return Ok(None);
            }
            if buf[p.pos] != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(buf[p.pos]).escape_default()
                )));
            }
            let Some((len, start)) = int_line(buf, p.pos + 1)? else {
                self.need = buf.len() + 1;
                self.partial = Some(p);
                return Ok(None);
            };
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= self.limits.max_bulk)
                .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
            let end = start + len;
            if buf.len() < end + 2 {
                self.need = end + 2;
                self.partial = Some(p);
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated by CRLF".into()));
            }
            p.args.push(start..end);
            p.pos = end + 2;
        }
        self.need = 0;
        let frame = buf.split_to(p.pos);
        let args = if p.args.iter().any(|r| r.len() >= ZERO_COPY_MIN) {
            let frame = frame.freeze();
            p.args.into_iter().map(|r| take(&frame, r)).collect()
        } else {
            p.args
                .into_iter()
                .map(|r| Bytes::copy_from_slice(&frame[r]))
                .collect()
        };
        Ok(Some(args))
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let window = &buf[..buf.len().min(self.limits.max_inline + 1)];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            if buf.len() > self.limits.max_inline {
                return Err(ProtocolError("too big inline request".into()));
            }
            self.need = buf.len() + 1;
            return Ok(None);
        };
        let line = buf.split_to(nl + 1);
        self.need = 0;
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some(
            line.split(|b| matches!(b, b' ' | b'\t'))
                .filter(|w| !w.is_empty())
                .map(Bytes::copy_from_slice)
                .collect(),
        ))
    }
}

fn take(frame: &Bytes, r: Range<usize>) -> Bytes {
    if r.len() >= ZERO_COPY_MIN {
        frame.slice(r)
    } else {
        Bytes::copy_from_slice(&frame[r])
    }
}

/// Parses `<integer>\r\n` starting at `start`: the number and the offset
/// after the line, or `None` if the line is not complete yet.
fn int_line(buf: &[u8], start: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[start.min(buf.len())..buf.len().min(start + MAX_INT_LINE)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        if window.len() >= MAX_INT_LINE {
            return Err(ProtocolError("length line too long".into()));
        }
        return Ok(None);
    };
    let digits = window[..nl]
        .strip_suffix(b"\r")
        .ok_or_else(|| ProtocolError("length line not terminated by CRLF".into()))?;
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError("invalid length".into()))?;
    Ok(Some((n, start + nl + 1)))
}

/// Appends a simple string reply (`+OK`).
pub(crate) fn simple(out: &mut BytesMut, s: &str) {
    out.extend_from_slice(b"+");
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply; line breaks in `msg` would end the reply early,
/// so they become spaces.
pub(crate) fn error(out: &mut BytesMut, msg: &str) {
    out.extend_from_slice(b"-");
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply.
pub(crate) fn int(out: &mut BytesMut, n: i64) {
    out.extend_from_slice(b":");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string reply, or the nil bulk for `None`.
pub(crate) fn bulk(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(b"$-1\r\n"),
        Some(v) => {
            out.extend_from_slice(b"$");
            out.extend_from_slice(itoa::Buffer::new().format(v.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends the header of an array reply of `n` elements.
pub(crate) fn array(out: &mut BytesMut, n: usize) {
    out.extend_from_slice(b"*");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(p: &mut Parser, buf: &mut BytesMut) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut out = Vec::new();
        while let Some(c) = p.next(buf)? {
            out.push(c);
        }
        Ok(out)
    }

    fn strs(cmd: &[Bytes]) -> Vec<&[u8]> {
        cmd.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn parses_pipelined_multibulk_and_inline() {
        let mut p = Parser::default();
        let mut buf = BytesMut::from(
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*3\r\n$3\r\nSET\r\n$0\r\n\r\n$2\r\nv\n\r\n"[..],
        );
        let cmds = parse_all(&mut p, &mut buf).unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(strs(&cmds[0]), vec![&b"GET"[..], b"k"]);
        assert_eq!(strs(&cmds[1]), vec![&b"PING"[..]]);
        assert_eq!(strs(&cmds[2]), vec![&b"SET"[..], b"", b"v\n"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_at_a_time_gives_the_same_commands() {
        let wire = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$5\r\nworld\r\necho  a\tb \r\n*0\r\n\r\n*1\r\n$4\r\nPING\r\n";
        let mut p = Parser::default();
        let mut buf = BytesMut::new();
        let mut cmds = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            cmds.extend(parse_all(&mut p, &mut buf).unwrap());
        }
        assert_eq!(cmds.len(), 3);
        assert_eq!(strs(&cmds[0]), vec![&b"SET"[..], b"hello", b"world"]);
        assert_eq!(strs(&cmds[1]), vec![&b"echo"[..], b"a", b"b"]);
        assert_eq!(strs(&cmds[2]), vec![&b"PING"[..]]);
        assert!(buf.is_empty());
    }

    #[test]
    fn large_arguments_are_zero_copy_and_intact() {
        let big = vec![b'x'; ZERO_COPY_MIN + 5];
        let mut wire = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", big.len()).into_bytes();
        wire.extend_from_slice(&big);
        wire.extend_from_slice(b"\r\n");
        let mut p = Parser::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in wire.chunks(1000) {
            buf.extend_from_slice(chunk);
            if let Some(c) = p.next(&mut buf).unwrap() {
                got = Some(c);
            }
        }
        let c = got.expect("command parsed");
        assert_eq!(&c[2][..], &big[..]);
        assert_eq!(&c[1][..], b"k");
    }

    #[test]
    fn rejects_garbage_with_errors() {
        let cases: &[&[u8]] = &[
            b"*2\r\n+OK\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$-5\r\n",
            b"*x\r\n",
            b"*1\r\n$3\r\nabcde\r\n",
            b"*99999999999999999999999\r\n",
            b"*1\n",
            b"*2000000\r\n",
            b"*1\r\n$999999999999\r\n",
        ];
        for case in cases {
            let mut p = Parser::default();
            let mut buf = BytesMut::from(*case);
            assert!(
                p.next(&mut buf).is_err(),
                "{:?} should be a protocol error",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn overlong_lines_are_errors_not_unbounded_buffering() {
        let mut p = Parser::default();
        let mut buf = BytesMut::from(&vec![b'a'; 64 * 1024 + 2][..]);
        assert!(p.next(&mut buf).is_err());
        let mut p = Parser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$1111111111111111111111111111111111"[..]);
        assert!(p.next(&mut buf).is_err());
    }

    #[test]
    fn command_size_cap_applies() {
        let mut p = Parser::new(Limits {
            max_command: 100,
            ..Limits::default()
        });
        let mut wire = b"*100\r\n".to_vec();
        for _ in 0..20 {
            wire.extend_from_slice(b"$5\r\nhello\r\n");
        }
        let mut buf = BytesMut::from(&wire[..]);
        assert!(p.next(&mut buf).is_err());
    }

    #[test]
    fn incomplete_input_waits() {
        let mut p = Parser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$10\r\nabc"[..]);
        assert_eq!(p.next(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"defghij\r");
        assert_eq!(p.next(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        let c = p.next(&mut buf).unwrap().unwrap();
        assert_eq!(&c[1][..], b"abcdefghij");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: random mixes of protocol fragments.
        let frags: &[&[u8]] = &[
            b"*", b"$", b"\r\n", b"\n", b"\r", b"1", b"2", b"-1", b"0", b"GET", b"x", b" ",
            b"99999", b"*3\r\n", b"$3\r\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            let mut p = Parser::default();
            let mut buf = BytesMut::new();
            for _ in 0..20 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.extend_from_slice(frags[(state % frags.len() as u64) as usize]);
                match p.next(&mut buf) {
                    Ok(Some(c)) => assert!(!c.is_empty()),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn encodes_replies() {
        let mut out = BytesMut::new();
        simple(&mut out, "OK");
        error(&mut out, "ERR bad\r\nthing");
        int(&mut out, -3);
        bulk(&mut out, Some(b"hi"));
        bulk(&mut out, None);
        array(&mut out, 2);
        assert_eq!(
            &out[..],
            b"+OK\r\n-ERR bad  thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*2\r\n"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn small_limits() -> Limits {
            // Small caps so random input reaches every limit too.
            Limits {
                max_args: 8,
                max_bulk: 64,
                max_inline: 64,
                max_command: 256,
            }
        }

        /// Feeds `wire` in pieces cut at `cuts`; each step must end in a
        /// command, "need more", or a protocol error (after which the
        /// connection would close, so feeding stops).
        fn feed(
            limits: Limits,
            wire: &[u8],
            cuts: &[usize],
        ) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
            let mut p = Parser::new(limits);
            let mut buf = BytesMut::new();
            let mut cmds = Vec::new();
            let mut at = 0;
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.push(wire.len());
            points.sort_unstable();
            for end in points {
                if end < at {
                    continue;
                }
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                while let Some(c) = p.next(&mut buf)? {
                    assert!(!c.is_empty(), "a returned command has a name");
                    cmds.push(c);
                }
            }
            Ok(cmds)
        }

        fn encode(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
            let mut w = Vec::new();
            for c in cmds {
                w.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
                for a in c {
                    w.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                    w.extend_from_slice(a);
                    w.extend_from_slice(b"\r\n");
                }
            }
            w
        }

        /// Protocol fragments, so random input often looks almost valid.
        fn wire() -> impl Strategy<Value = Vec<u8>> {
            let frag = prop_oneof![
                prop::sample::select(vec![
                    &b"*"[..],
                    b"$",
                    b"\r\n",
                    b"\n",
                    b"\r",
                    b"-1",
                    b"0",
                    b"1",
                    b"3",
                    b"99999999999",
                    b"*2\r\n",
                    b"$3\r\nGET\r\n",
                    b" ",
                    b"PING",
                    b"-",
                    b"+",
                ])
                .prop_map(<[u8]>::to_vec),
                prop::collection::vec(any::<u8>(), 0..24),
            ];
            prop::collection::vec(frag, 0..24).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Arbitrary bytes, cut anywhere: never a panic.
            #[test]
            fn arbitrary_bytes_give_commands_need_more_or_an_error(
                wire in wire(),
                cuts in prop::collection::vec(any::<usize>(), 0..6),
                small in any::<bool>(),
            ) {
                let limits = if small { small_limits() } else { Limits::default() };
                let _ = feed(limits, &wire, &cuts);
            }

            /// Valid commands, cut anywhere, come back exactly.
            #[test]
            fn valid_commands_cut_anywhere_round_trip(
                cmds in prop::collection::vec(
                    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5),
                    1..6,
                ),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let wire = encode(&cmds);
                let got = feed(Limits::default(), &wire, &cuts);
                let want: Vec<Vec<Bytes>> = cmds
                    .iter()
                    .map(|c| c.iter().map(|a| Bytes::copy_from_slice(a)).collect())
                    .collect();
                prop_assert_eq!(got, Ok(want));
            }
        }
    }
}
