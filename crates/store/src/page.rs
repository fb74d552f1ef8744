//! Keyset pagination shared by the list calls: a page request (limit, opaque cursor) and a
//! page of items with the cursor of the next page. Cursors encode the sort key of the last
//! item returned, so pages stay stable while rows are inserted.

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

// Cursor formats. Each is plain text with a pattern the OpenAPI document states, and *every*
// string matching the pattern is a valid position in its list (a keyset position need not be
// one the server issued), so a schema-valid cursor is never refused. Only URL-safe
// characters: digits, lowercase hex, `.` and `-`.

/// A (timestamp, id) cursor: `{microseconds since the epoch}.{id as 32 lowercase hex digits}`.
pub const TIME_CURSOR_PATTERN: &str = "^(-?[0-9]{1,16}\\.[0-9a-f]{32})?$";
/// A (text, id) cursor: `{id as 32 lowercase hex digits}.{the text's UTF-8 bytes in
/// lowercase hex}`; bytes that are not UTF-8 (or a NUL) stand for U+FFFD.
pub const TEXT_CURSOR_PATTERN: &str = "^([0-9a-f]{32}\\.([0-9a-f]{2})*)?$";
/// An offset cursor (lists the API pages in memory): 1 to 9 decimal digits.
pub const OFFSET_CURSOR_PATTERN: &str = "^([0-9]{1,9})?$";

fn invalid_cursor() -> StoreError {
    StoreError::Invalid("invalid_cursor".to_owned())
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_id(text: &str) -> Result<Uuid> {
    if text.len() != 32 || !is_lower_hex(text) {
        return Err(invalid_cursor());
    }
    u128::from_str_radix(text, 16)
        .map(Uuid::from_u128)
        .map_err(|_| invalid_cursor())
}

/// The sort key of a newest-first list: (timestamp, id), both descending.
pub(crate) fn encode_time_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}.{}", at.timestamp_micros(), id.simple())
}

pub(crate) fn decode_time_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('.').ok_or_else(invalid_cursor)?;
    let digits = micros.strip_prefix('-').unwrap_or(micros);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_cursor());
    }
    let micros: i64 = micros.parse().map_err(|_| invalid_cursor())?;
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(invalid_cursor)?;
    Ok((at, hex_id(id)?))
}

/// The sort key of a name-ordered list: (text, id), both ascending.
pub(crate) fn encode_text_cursor(text: &str, id: Uuid) -> String {
    use std::fmt::Write;
    let mut cursor = format!("{}.", id.simple());
    for byte in text.as_bytes() {
        let _ = write!(cursor, "{byte:02x}");
    }
    cursor
}

pub(crate) fn decode_text_cursor(cursor: &str) -> Result<(String, Uuid)> {
    let (id, hex) = cursor.split_once('.').ok_or_else(invalid_cursor)?;
    let id = hex_id(id)?;
    if hex.len() % 2 != 0 || !is_lower_hex(hex) {
        return Err(invalid_cursor());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).map_err(|_| invalid_cursor()))
        .collect::<Result<Vec<u8>>>()?;
    // Any byte string is a position: what is not UTF-8, and a NUL (which PostgreSQL text
    // cannot hold), becomes U+FFFD.
    let text = String::from_utf8_lossy(&bytes).replace('\0', "\u{FFFD}");
    Ok((text, id))
}

/// An offset cursor for a list paged in memory.
pub fn encode_offset_cursor(offset: usize) -> String {
    offset.to_string()
}

/// The offset an offset cursor names.
pub fn decode_offset_cursor(cursor: &str) -> Result<usize> {
    if cursor.is_empty() || cursor.len() > 9 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_cursor());
    }
    cursor.parse().map_err(|_| invalid_cursor())
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
        assert_eq!(
            decode_offset_cursor(&encode_offset_cursor(120)).expect("offset"),
            120
        );
    }

    /// Every string the documented pattern admits decodes (the OpenAPI document promises it),
    /// and every other one is refused.
    #[test]
    fn the_patterns_are_exactly_the_accepted_cursors() {
        let id = "0123456789abcdef0123456789abcdef";
        for good in [
            format!("0.{id}"),
            format!("-9999999999999999.{id}"),
            format!("9999999999999999.{id}"),
        ] {
            assert!(decode_time_cursor(&good).is_ok(), "{good}");
        }
        for bad in [
            format!("+1.{id}"),
            format!("1.{}", id.to_uppercase()),
            format!("12345678901234567.{id}"),
            format!("-.{id}"),
            format!("1.{id}0"),
            "1".to_owned(),
        ] {
            assert!(decode_time_cursor(&bad).is_err(), "{bad}");
        }
        for good in [
            format!("{id}."),
            format!("{id}.00ff41"),
            format!("{id}.c328"),
        ] {
            let (text, _) = decode_text_cursor(&good).expect(&good);
            assert!(!text.contains('\0'), "{good}");
        }
        for bad in [
            format!("{id}.0"),
            format!("{id}.AB"),
            id.to_owned(),
            format!("+{id}.00"),
        ] {
            assert!(decode_text_cursor(&bad).is_err(), "{bad}");
        }
        for good in ["0", "123456789"] {
            assert!(decode_offset_cursor(good).is_ok(), "{good}");
        }
        for bad in ["", "1234567890", "+1", "-1", "1a"] {
            assert!(decode_offset_cursor(bad).is_err(), "{bad}");
        }
    }
}
