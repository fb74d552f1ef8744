//! Defence against bad directory records (SPEC §5.6): a record that would not fit the PSA or
//! would break a bulk write is skipped with a reason instead of failing the page.

use crate::email::{normalize_email, MAX_EMAIL_LEN};
use crate::model::{DirectoryEntry, DirectoryUser};
use std::borrow::Cow;

/// Longest name or job title accepted, in characters.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest phone number accepted, in characters.
pub const MAX_PHONE_LEN: usize = 128;
/// Longest object id accepted; Entra ids are 36-character GUIDs.
pub const MAX_OBJECT_ID_LEN: usize = 256;
/// Longest single `otherMails` or `proxyAddresses` entry (X.500 proxies can be long).
pub const MAX_ADDRESS_ENTRY_LEN: usize = 2048;
/// Most entries accepted in one list field (Exchange allows about 400 proxy addresses).
pub const MAX_LIST_LEN: usize = 1000;

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
    // Control characters (NUL above all, which PostgreSQL text refuses) never belong in these
    // fields; letting one through would fail the whole page's bulk write. Nearly every value is
    // ASCII, whose control characters are its bytes below 0x20 and 0x7F (`char::is_control`
    // adds only U+0080–U+009F, which are not ASCII), and whose length in characters is its
    // length in bytes: checked bytewise, every user of a page is validated in microseconds.
    let ascii = value.is_ascii();
    let has_control = if ascii {
        value.bytes().any(|byte| byte.is_ascii_control())
    } else {
        value.chars().any(char::is_control)
    };
    if has_control {
        return Err(format!("{field} contains a control character"));
    }
    // A string has at least as many bytes as characters: within the limit in bytes, it is
    // within it in characters too.
    if value.len() <= max_chars {
        return Ok(());
    }
    let length = if ascii {
        value.len()
    } else {
        value.chars().count()
    };
    if length > max_chars {
        return Err(format!(
            "{field} is {length} characters long (at most {max_chars})"
        ));
    }
    Ok(())
}

/// Whether the record is fit to plan with; the error says which field is wrong.
pub fn validate_user(user: &DirectoryUser) -> Result<(), String> {
    if user.object_id.trim().is_empty() {
        return Err("object id is empty".to_string());
    }
    check_text("object id", &user.object_id, MAX_OBJECT_ID_LEN)?;
    let names = [
        ("displayName", &user.display_name),
        ("givenName", &user.given_name),
        ("surname", &user.surname),
        ("jobTitle", &user.job_title),
        ("userType", &user.user_type),
        ("creationType", &user.creation_type),
    ];
    for (field, value) in names {
        if let Some(value) = value {
            check_text(field, value, MAX_NAME_LEN)?;
        }
    }
    if let Some(mobile) = &user.mobile_phone {
        check_text("mobilePhone", mobile, MAX_PHONE_LEN)?;
    }
    if user.business_phones.len() > MAX_LIST_LEN {
        return Err("businessPhones has too many entries".to_string());
    }
    for phone in &user.business_phones {
        check_text("businessPhones", phone, MAX_PHONE_LEN)?;
    }
    if let Some(upn) = &user.user_principal_name {
        check_text("userPrincipalName", upn.trim(), MAX_EMAIL_LEN)?;
    }
    if let Some(mail) = &user.mail {
        check_text("mail", mail.trim(), MAX_EMAIL_LEN)?;
        // Graph only stores valid SMTP addresses in `mail`, so an unparseable one means the
        // record was damaged on the way; it is not merely a user without an address.
        if !mail.trim().is_empty() && normalize_email(mail).is_none() {
            return Err("mail is not a valid email address".to_string());
        }
    }
    for (field, list) in [
        ("otherMails", &user.other_mails),
        ("proxyAddresses", &user.proxy_addresses),
    ] {
        if list.len() > MAX_LIST_LEN {
            return Err(format!("{field} has too many entries"));
        }
        for entry in list {
            check_text(field, entry, MAX_ADDRESS_ENTRY_LEN)?;
        }
    }
    Ok(())
}

/// Whether an object id can be stored and looked up: not empty, no control character (NUL
/// above all, which PostgreSQL text refuses in a bound parameter), not over-long.
pub fn storable_object_id(object_id: &str) -> bool {
    !object_id.trim().is_empty() && check_text("object id", object_id, MAX_OBJECT_ID_LEN).is_ok()
}

/// The page as the store may bind it: a present user whose record fails `validate_user` (a
/// NUL byte or an over-long value in any field) becomes an `Invalid` entry with the reason,
/// and an object id PostgreSQL cannot store is dropped from removals and invalid entries. One
/// bad record then skips that user, never the page. A page with nothing to replace (nearly
/// every page) is borrowed as it is, not copied.
pub fn storable_entries(entries: &[DirectoryEntry]) -> Cow<'_, [DirectoryEntry]> {
    if entries.iter().all(|entry| unstorable(entry).is_none()) {
        return Cow::Borrowed(entries);
    }
    Cow::Owned(
        entries
            .iter()
            .map(|entry| unstorable(entry).unwrap_or_else(|| entry.clone()))
            .collect(),
    )
}

/// What replaces `entry` in the page the store binds; None when it can be stored as it is.
fn unstorable(entry: &DirectoryEntry) -> Option<DirectoryEntry> {
    match entry {
        DirectoryEntry::Present(user) => {
            validate_user(user)
                .err()
                .map(|reason| DirectoryEntry::Invalid {
                    object_id: storable_object_id(&user.object_id).then(|| user.object_id.clone()),
                    reason,
                })
        }
        DirectoryEntry::Removed { object_id, .. } if !storable_object_id(object_id) => {
            Some(DirectoryEntry::Invalid {
                object_id: None,
                reason: "a removal names an object id that cannot be stored".to_string(),
            })
        }
        DirectoryEntry::Invalid {
            object_id: Some(object_id),
            reason,
        } if !storable_object_id(object_id) => Some(DirectoryEntry::Invalid {
            object_id: None,
            reason: reason.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod storable_tests {
    use super::*;

    #[test]
    fn unstorable_values_become_invalid_entries() {
        let good = DirectoryUser {
            object_id: "ok".to_string(),
            ..DirectoryUser::default()
        };
        let nul_name = DirectoryUser {
            object_id: "nul".to_string(),
            display_name: Some("Bob\u{0}".to_string()),
            ..DirectoryUser::default()
        };
        let nul_id = DirectoryUser {
            object_id: "id\u{0}".to_string(),
            ..DirectoryUser::default()
        };
        let long_title = DirectoryUser {
            object_id: "long".to_string(),
            job_title: Some("x".repeat(MAX_NAME_LEN + 1)),
            ..DirectoryUser::default()
        };
        let entries = vec![
            DirectoryEntry::Present(good.clone()),
            DirectoryEntry::Present(nul_name),
            DirectoryEntry::Present(nul_id),
            DirectoryEntry::Present(long_title),
            DirectoryEntry::Removed {
                object_id: "gone\u{0}".to_string(),
                permanent: false,
            },
        ];
        let storable = storable_entries(&entries);
        assert_eq!(storable[0], DirectoryEntry::Present(good.clone()));
        assert!(
            matches!(&storable[1], DirectoryEntry::Invalid { object_id: Some(id), .. } if id == "nul")
        );
        assert!(matches!(
            &storable[2],
            DirectoryEntry::Invalid {
                object_id: None,
                ..
            }
        ));
        assert!(
            matches!(&storable[3], DirectoryEntry::Invalid { object_id: Some(id), reason } if id == "long" && reason.contains("jobTitle"))
        );
        assert!(matches!(
            &storable[4],
            DirectoryEntry::Invalid {
                object_id: None,
                ..
            }
        ));
        // A page with nothing to replace is the page itself, not a copy.
        let clean = [DirectoryEntry::Present(good)];
        assert!(matches!(storable_entries(&clean), Cow::Borrowed(_)));
        assert!(matches!(storable_entries(&entries), Cow::Owned(_)));
    }

    /// The definition `check_text` implements, character by character.
    fn reference(value: &str, max_chars: usize) -> bool {
        !value.chars().any(char::is_control) && value.chars().count() <= max_chars
    }

    #[test]
    fn the_bytewise_check_agrees_with_the_character_definition_at_the_edges() {
        let cases = [
            String::new(),
            "plain".to_owned(),
            "x".repeat(8),
            "x".repeat(9),
            "tab\there".to_owned(),
            "del\u{7f}".to_owned(),
            "c1 next line \u{85}".to_owned(),
            "c1 last \u{9f}".to_owned(),
            "nbsp\u{a0}".to_owned(),
            // Over the limit in bytes, within it in characters.
            "é".repeat(8),
            "é".repeat(9),
            "日本".repeat(4),
            "🙂".repeat(9),
        ];
        for value in &cases {
            assert_eq!(
                check_text("field", value, 8).is_ok(),
                reference(value, 8),
                "{value:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn check_text_is_its_character_definition(value in ".{0,24}", max_chars in 0usize..20) {
            proptest::prop_assert_eq!(
                check_text("field", &value, max_chars).is_ok(),
                reference(&value, max_chars)
            );
        }
    }
}
