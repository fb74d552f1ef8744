//! Email addresses of directory users: normalization, syntax check, and the ordered set of
//! candidate addresses the matcher looks up (SPEC §5.3).

use unicode_normalization::UnicodeNormalization;

use crate::model::DirectoryUser;

/// The longest address SMTP can carry (RFC 5321 forward-path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// The longest local part RFC 5321 allows.
const MAX_LOCAL_PART_LEN: usize = 64;

/// Characters that never appear in an address we want to match on. They show up when a
/// provider hands us a display form such as `"Bob" <bob@contoso.com>` or a list joined by
/// commas, which must not be mistaken for one address.
const FORBIDDEN: &[char] = &['<', '>', '(', ')', ',', ';', ':', '"', '[', ']', '\\'];

/// The one comparison form of an address, used by the planner and stored in
/// `contacts.email_normalized` (so SQL lookups compare exactly what the planner compares):
/// every Unicode white space trimmed from both ends (a non-breaking space included), NFC, then
/// Unicode lower-casing (and NFC again, since lower-casing can decompose). No syntax check;
/// `None` for an empty address.
pub fn email_key(raw: &str) -> Option<String> {
    let trimmed = raw.trim_matches(char::is_whitespace);
    if trimmed.is_empty() {
        return None;
    }
    // ASCII is its own NFC and lower-cases to ASCII: nearly every address takes this path,
    // which gives what `unicode_key` would (a property test says so) at a fraction of the cost.
    if trimmed.is_ascii() {
        return Some(trimmed.to_ascii_lowercase());
    }
    Some(unicode_key(trimmed))
}

/// NFC, Unicode lower-casing, NFC again.
fn unicode_key(trimmed: &str) -> String {
    let composed: String = trimmed.nfc().collect();
    composed.to_lowercase().nfc().collect()
}

/// The comparison form of an address (`email_key`), syntax-checked. `None` when it is not
/// usable.
pub fn normalize_email(raw: &str) -> Option<String> {
    let lowered = email_key(raw)?;
    if lowered.len() > MAX_EMAIL_LEN {
        return None;
    }
    if lowered
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || FORBIDDEN.contains(&c))
    {
        return None;
    }
    let (local, domain) = lowered.split_once('@')?;
    if local.is_empty() || local.len() > MAX_LOCAL_PART_LEN || domain.contains('@') {
        return None;
    }
    if !is_domain(domain) {
        return None;
    }
    Some(lowered)
}

/// Whether `domain` looks like a DNS name with at least two labels: no empty labels, labels
/// of letters, digits and hyphens (Unicode letters allowed for IDNs), no label starting or
/// ending with a hyphen, at most 63 bytes per label.
pub fn is_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 253 || !domain.contains('.') {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    })
}

/// The domain part of a normalized address.
pub fn email_domain(normalized: &str) -> Option<&str> {
    normalized.rsplit_once('@').map(|(_, domain)| domain)
}

/// Guests are invited users (`userType` Guest) and external members, whose UPN carries
/// `#EXT#`; their UPN is a mangled form of their real address and is never used.
pub fn is_guest(user: &DirectoryUser) -> bool {
    let guest_type = user
        .user_type
        .as_deref()
        .is_some_and(|user_type| user_type.trim().eq_ignore_ascii_case("guest"));
    guest_type || has_external_upn(user)
}

fn has_external_upn(user: &DirectoryUser) -> bool {
    user.user_principal_name
        .as_deref()
        .is_some_and(|upn| upn.to_ascii_uppercase().contains("#EXT#"))
}

/// The address of a proxyAddresses entry when it is an SMTP one (`SMTP:` primary or `smtp:`
/// secondary, compared case-insensitively), with whether it is the primary.
fn smtp_proxy(entry: &str) -> Option<(bool, &str)> {
    let entry = entry.trim();
    let (prefix, address) = entry.split_once(':')?;
    if !prefix.eq_ignore_ascii_case("smtp") {
        return None;
    }
    Some((prefix == "SMTP", address))
}

/// Every usable address of the user, normalized and deduplicated, most authoritative first:
/// `mail`, the `SMTP:` primary proxy address, the UPN (not for guests), the other `smtp:`
/// proxy addresses, then `otherMails`.
pub fn user_emails(user: &DirectoryUser) -> Vec<String> {
    let mut emails: Vec<String> = Vec::new();
    let mut push = |raw: &str| {
        if let Some(normalized) = normalize_email(raw) {
            if !emails.contains(&normalized) {
                emails.push(normalized);
            }
        }
    };
    if let Some(mail) = &user.mail {
        push(mail);
    }
    for (primary, address) in user
        .proxy_addresses
        .iter()
        .filter_map(|entry| smtp_proxy(entry))
    {
        if primary {
            push(address);
        }
    }
    if !is_guest(user) {
        if let Some(upn) = &user.user_principal_name {
            push(upn);
        }
    }
    for (primary, address) in user
        .proxy_addresses
        .iter()
        .filter_map(|entry| smtp_proxy(entry))
    {
        if !primary {
            push(address);
        }
    }
    for other in &user.other_mails {
        push(other);
    }
    emails
}

/// The address a created contact gets and the domain filters look at.
pub fn primary_email(user: &DirectoryUser) -> Option<String> {
    user_emails(user).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_accepts_and_rejects() {
        let rows: &[(&str, Option<&str>)] = &[
            ("  Bob@Contoso.COM ", Some("bob@contoso.com")),
            (
                "bob+tag@sales.contoso.com",
                Some("bob+tag@sales.contoso.com"),
            ),
            (
                "alice_gmail.com#EXT#@contoso.onmicrosoft.com",
                Some("alice_gmail.com#ext#@contoso.onmicrosoft.com"),
            ),
            ("", None),
            ("   ", None),
            ("bob", None),
            ("@contoso.com", None),
            ("bob@", None),
            ("bob@contoso", None),
            ("bob@@contoso.com", None),
            ("bob@a@contoso.com", None),
            ("bo b@contoso.com", None),
            ("bob@contoso..com", None),
            ("bob@.contoso.com", None),
            ("bob@-contoso.com", None),
            ("bob\u{0}@contoso.com", None),
            ("\"Bob\" <bob@contoso.com>", None),
            ("bob@contoso.com, eve@contoso.com", None),
        ];
        for (raw, expected) in rows {
            assert_eq!(normalize_email(raw).as_deref(), *expected, "input {raw:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_ascii_path_keys_as_the_unicode_path(raw in "[ -~]{1,40}") {
            let trimmed = raw.trim_matches(char::is_whitespace);
            proptest::prop_assume!(!trimmed.is_empty());
            proptest::prop_assert_eq!(email_key(&raw), Some(unicode_key(trimmed)));
        }
    }

    #[test]
    fn email_key_is_unicode_aware() {
        let rows: &[(&str, Option<&str>)] = &[
            ("Bob@Contoso.com", Some("bob@contoso.com")),
            ("\u{a0}bob@contoso.com\u{a0}", Some("bob@contoso.com")),
            (
                "\u{2003}\u{3000}bob@contoso.com\u{202f}\n",
                Some("bob@contoso.com"),
            ),
            ("JOSÉ@Contoso.com", Some("josé@contoso.com")),
            // A decomposed é (e + combining acute) composes to the same key.
            ("Jose\u{301}@contoso.com", Some("jos\u{e9}@contoso.com")),
            ("ÅSA.ÖBERG@Fabrikam.SE", Some("åsa.öberg@fabrikam.se")),
            ("ΣΟΦΊΑ@example.gr", Some("σοφία@example.gr")),
            ("\u{a0}\u{a0}", None),
            ("", None),
        ];
        for (raw, expected) in rows {
            assert_eq!(email_key(raw).as_deref(), *expected, "input {raw:?}");
            if let Some(expected) = expected {
                assert_eq!(
                    normalize_email(raw).as_deref(),
                    Some(*expected),
                    "input {raw:?}"
                );
            }
        }
        let long_local = format!("{}@contoso.com", "a".repeat(65));
        assert_eq!(normalize_email(&long_local), None);
        let long = format!("{}@{}com", "a".repeat(60), "bcdefghij.".repeat(20));
        assert!(long.len() > MAX_EMAIL_LEN);
        assert_eq!(normalize_email(&long), None);
    }
}
