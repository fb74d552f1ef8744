//! Keyset pagination shared by the list calls: a page request (limit, opaque cursor) and a
//! page of items with the cursor of the next page. Cursors encode the sort key of the last
//! item returned, so pages stay stable while rows are inserted.

use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::StoreError;
use crate::Result;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// What the caller asks for: at most `limit` items after `cursor`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// None means `DEFAULT_LIMIT`; values above `MAX_LIMIT` are capped.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One page of a list, and the cursor of the next one (None on the last page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl PageRequest {
    pub fn first(limit: u32) -> PageRequest {
        PageRequest {
            limit: Some(limit),
            cursor: None,
        }
    }

    pub(crate) fn effective_limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
    }
}

/// The sort key of a newest-first list: (timestamp, id), both descending.
pub(crate) fn encode_time_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        at.timestamp_micros(),
        id
    ))
}

pub(crate) fn decode_time_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let invalid = || StoreError::Invalid("invalid_cursor".to_owned());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((at, id))
}

/// The sort key of a name-ordered list: (text, id), both ascending.
pub(crate) fn encode_text_cursor(text: &str, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id}|{text}"))
}

pub(crate) fn decode_text_cursor(cursor: &str) -> Result<(String, Uuid)> {
    let invalid = || StoreError::Invalid("invalid_cursor".to_owned());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (id, text) = text.split_once('|').ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((text.to_owned(), id))
}

/// Splits `limit + 1` fetched rows into a page: the extra row only says another page exists.
pub(crate) fn into_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor_of)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let id = Uuid::new_v4();
        let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        assert_eq!(
            decode_time_cursor(&encode_time_cursor(at, id)).expect("decode"),
            (at, id)
        );
        assert_eq!(
            decode_text_cursor(&encode_text_cursor("A|b", id)).expect("decode"),
            ("A|b".to_owned(), id)
        );
        assert!(decode_time_cursor("garbage!").is_err());
    }
}
