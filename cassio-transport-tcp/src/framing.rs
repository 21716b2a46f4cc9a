//! Length-prefixed frames on a byte stream: a 4-byte big-endian length, then
//! that many bytes. Used on TCP connections and on QUIC streams.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in a frame's length prefix.
pub const HEADER_LEN: usize = 4;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The announced length is over the cap; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The stream failed or ended inside a frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The length prefix for a frame of `len` bytes; callers check the cap
/// (which is at most `u32::MAX`) first.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Bytes>, ReadFrameError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut head[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(head) as usize;
    // Checked before allocating, so a hostile prefix costs us nothing.
    if len > max {
        return Err(ReadFrameError::TooLarge { len, max });
    }
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let n = (&mut *r)
            .take((len - buf.len()) as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(buf.freeze()))
}

/// Writes one frame (no flush: callers batch).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(&header(frame.len())).await?;
    w.write_all(frame).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_keep_their_boundaries() {
        let mut out = Vec::new();
        for f in [&b""[..], b"a", b"hello", &[7u8; 70_000][..]] {
            write_frame(&mut out, f).await.unwrap();
        }
        let mut r = out.as_slice();
        assert_eq!(
            read_frame(&mut r, 1 << 20).await.unwrap().unwrap(),
            &b""[..]
        );
        assert_eq!(
            read_frame(&mut r, 1 << 20).await.unwrap().unwrap(),
            &b"a"[..]
        );
        assert_eq!(
            read_frame(&mut r, 1 << 20).await.unwrap().unwrap(),
            &b"hello"[..]
        );
        assert_eq!(
            read_frame(&mut r, 1 << 20).await.unwrap().unwrap().len(),
            70_000
        );
        assert!(read_frame(&mut r, 1 << 20).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversize_prefix_is_refused_before_reading_the_body() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = read_frame(&mut &bytes[..], 1024).await.unwrap_err();
        assert!(matches!(
            err,
            ReadFrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
    }

    #[tokio::test]
    async fn truncation_is_an_error_not_a_short_frame() {
        let mut out = Vec::new();
        write_frame(&mut out, b"hello world").await.unwrap();
        for cut in [1, 3, 5, out.len() - 1] {
            let err = read_frame(&mut &out[..cut], 1024).await.unwrap_err();
            assert!(
                matches!(err, ReadFrameError::Io(_)),
                "cut at {cut}: {err:?}"
            );
        }
    }
}
