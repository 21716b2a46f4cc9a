//! Reading a row's cells page by page, for the gateways (RESP hashes and
//! HTTP row reads).

use super::{execute, Protocol};
use crate::handle::{NodeHandle, RequestError};
use bytes::Bytes;
use cassio_core::{ClientRequest, ClientResponse, Consistency, RowSlice, MAX_ROW_PAGE};

/// Up to `max` live cells of a row's slice, in column order, read page by
/// page; and whether the slice holds more than `max`.
pub(crate) async fn read_row_more(
    handle: &NodeHandle,
    protocol: Option<Protocol>,
    row: &Bytes,
    slice: RowSlice,
    max: usize,
    c: Option<Consistency>,
    ks: &str,
) -> Result<(Vec<(Bytes, Bytes)>, bool), RequestError> {
    let mut out = Vec::new();
    // Every slice pages as a column range: the next page starts just after
    // the last column the previous one covered.
    let (mut from, to) = as_range(slice);
    let mut more = false;
    // One more than asked, to tell whether the slice continues.
    let want = max.saturating_add(1);
    while out.len() < want {
        let page = u32::try_from((want - out.len()).min(MAX_ROW_PAGE)).unwrap_or(1);
        let slice = RowSlice::Range {
            from: from.clone(),
            to: to.clone(),
        };
        let mut req = ClientRequest::read_row(row.clone(), slice, page).in_keyspace(ks);
        req.consistency = c;
        // The gateways count their requests; the native port does not.
        let answer = match protocol {
            Some(p) => execute(handle, p, req).await?,
            None => handle.execute(req).await?,
        };
        let ClientResponse::Cells {
            cells,
            more: page_more,
            last,
        } = answer
        else {
            return Err(RequestError::BadRequest(
                "the node answered a row read with something else".into(),
            ));
        };
        out.extend(cells);
        match (page_more, last) {
            (true, Some(last)) => {
                let mut next = last.to_vec();
                next.push(0);
                from = Some(Bytes::from(next));
            }
            _ => break,
        }
    }
    if out.len() > max {
        more = true;
        out.truncate(max);
    }
    Ok((out, more))
}

/// Up to `max` live cells of a row's slice, in column order.
pub(crate) async fn read_row(
    handle: &NodeHandle,
    protocol: Protocol,
    row: &Bytes,
    slice: RowSlice,
    max: usize,
    c: Option<Consistency>,
    ks: &str,
) -> Result<Vec<(Bytes, Bytes)>, RequestError> {
    read_row_more(handle, Some(protocol), row, slice, max, c, ks)
        .await
        .map(|(cells, _)| cells)
}

/// A slice as a column range `from..to` (`None`: unbounded).
pub(crate) fn as_range(slice: RowSlice) -> (Option<Bytes>, Option<Bytes>) {
    match slice {
        RowSlice::All => (None, None),
        RowSlice::Range { from, to } => (from, to),
        RowSlice::After(c) => {
            let mut next = c.to_vec();
            next.push(0);
            (Some(Bytes::from(next)), None)
        }
        RowSlice::Prefix(p) => {
            // The first column after every column starting with `p`: its
            // last byte below 0xFF plus one (none for an all-0xFF prefix).
            let mut end = p.to_vec();
            while end.last() == Some(&u8::MAX) {
                end.pop();
            }
            let to = end.last_mut().map(|b| *b += 1).map(|()| Bytes::from(end));
            (Some(p), to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_ranges() {
        assert_eq!(
            as_range(RowSlice::Prefix(Bytes::from_static(b"ab"))),
            (
                Some(Bytes::from_static(b"ab")),
                Some(Bytes::from_static(b"ac"))
            )
        );
        assert_eq!(
            as_range(RowSlice::Prefix(Bytes::from_static(b"a\xff"))),
            (
                Some(Bytes::from_static(b"a\xff")),
                Some(Bytes::from_static(b"b"))
            )
        );
        assert_eq!(
            as_range(RowSlice::Prefix(Bytes::from_static(b"\xff"))),
            (Some(Bytes::from_static(b"\xff")), None)
        );
        assert_eq!(
            as_range(RowSlice::After(Bytes::from_static(b"x"))),
            (Some(Bytes::from_static(b"x\x00")), None)
        );
    }
}
