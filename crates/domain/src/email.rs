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
    if !usable_characters(&lowered) {
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
    // For ASCII, `char::is_alphanumeric` is `is_ascii_alphanumeric`: bytes suffice.
    if domain.is_ascii() {
        domain_shaped(domain, |label| {
            label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    } else {
        domain_shaped(domain, unicode_label)
    }
}

/// The shape [`is_domain`] asks for, with `label_characters` judging each label's characters.
fn domain_shaped(domain: &str, label_characters: impl Fn(&str) -> bool) -> bool {
    if domain.is_empty() || domain.len() > 253 || !domain.contains('.') {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label_characters(label)
    })
}

/// Letters (Unicode ones included, for IDNs), digits and hyphens.
fn unicode_label(label: &str) -> bool {
    label.chars().all(|c| c.is_alphanumeric() || c == '-')
}

/// No white space, no control character and nothing of [`FORBIDDEN`]. For ASCII, white space
/// and control characters are exactly the bytes up to the space and DEL, so the check is one
/// pass over bytes.
fn usable_characters(address: &str) -> bool {
    if address.is_ascii() {
        return address
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && !FORBIDDEN.contains(&char::from(b)));
    }
    usable_chars(address)
}

/// [`usable_characters`] for any text, a character at a time.
fn usable_chars(address: &str) -> bool {
    !address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || FORBIDDEN.contains(&c))
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
    user.user_principal_name.as_deref().is_some_and(|upn| {
        upn.as_bytes()
            .windows(5)
            .any(|window| window.eq_ignore_ascii_case(b"#EXT#"))
    })
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

/// The user's raw addresses in the order [`user_emails`] ranks them: `mail`, the `SMTP:`
/// primary proxy address, the UPN (not for guests), the other `smtp:` proxy addresses, then
/// `otherMails`. Lazy, so [`primary_email`] stops at the first usable one.
fn ranked_addresses(user: &DirectoryUser) -> impl Iterator<Item = &str> {
    let proxies = move |want_primary: bool| {
        user.proxy_addresses
            .iter()
            .filter_map(|entry| smtp_proxy(entry))
            .filter(move |(primary, _)| *primary == want_primary)
            .map(|(_, address)| address)
    };
    let upn = std::iter::once_with(move || {
        user.user_principal_name
            .as_deref()
            .filter(|_| !is_guest(user))
    })
    .flatten();
    user.mail
        .as_deref()
        .into_iter()
        .chain(proxies(true))
        .chain(upn)
        .chain(proxies(false))
        .chain(user.other_mails.iter().map(String::as_str))
}

/// Every usable address of the user, normalized and deduplicated, most authoritative first
/// (the order of [`ranked_addresses`]).
pub fn user_emails(user: &DirectoryUser) -> Vec<String> {
    let mut emails: Vec<String> = Vec::new();
    for normalized in ranked_addresses(user).filter_map(normalize_email) {
        if !emails.contains(&normalized) {
            emails.push(normalized);
        }
    }
    emails
}

/// The address a created contact gets and the domain filters look at: the first of
/// [`user_emails`], found without normalizing the rest.
pub fn primary_email(user: &DirectoryUser) -> Option<String> {
    ranked_addresses(user).find_map(normalize_email)
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

    fn user_with(
        mail: Option<String>,
        upn: Option<String>,
        proxies: Vec<String>,
        other_mails: Vec<String>,
        guest: bool,
    ) -> DirectoryUser {
        DirectoryUser {
            object_id: "u".into(),
            display_name: None,
            given_name: None,
            surname: None,
            mail,
            user_principal_name: upn,
            other_mails,
            proxy_addresses: proxies,
            account_enabled: None,
            user_type: guest.then(|| "Guest".to_owned()),
            creation_type: None,
            job_title: None,
            mobile_phone: None,
            business_phones: Vec::new(),
            assigned_license_count: 0,
            group_ids: None,
        }
    }

    proptest::proptest! {
        #[test]
        fn the_ascii_character_checks_agree_with_the_char_checks(
            // Printable ASCII with at most one byte of any kind: a control byte in every
            // string would make both checks refuse everything alike.
            raw in "[ -~]{0,15}[\\x00-\\x7f]?[ -~]{0,15}",
            domain in "[a-zA-Z0-9_ -]{1,8}(\\.[a-zA-Z0-9_-]{0,8}){1,3}",
        ) {
            proptest::prop_assert_eq!(usable_characters(&raw), usable_chars(&raw));
            proptest::prop_assert_eq!(is_domain(&raw), domain_shaped(&raw, unicode_label));
            proptest::prop_assert_eq!(is_domain(&domain), domain_shaped(&domain, unicode_label));
        }

        /// `primary_email` stops at the first usable address; it must be exactly the first of
        /// `user_emails`, whatever mix of unusable, duplicate and guest addresses comes first.
        #[test]
        fn the_primary_address_is_the_first_of_the_ranked_addresses(
            mail in proptest::option::of("(bad|Bob@Contoso\\.com|eve@x\\.io| )"),
            upn in proptest::option::of("(bob@contoso\\.com|a_b\\.com#EXT#@t\\.onmicrosoft\\.com|no)"),
            proxies in proptest::collection::vec("(SMTP|smtp|X500):(p@contoso\\.com|bad|Q@fabrikam\\.com)", 0..3),
            other_mails in proptest::collection::vec("(o@other\\.org|nope)", 0..2),
            guest in proptest::bool::ANY,
        ) {
            let user = user_with(mail, upn, proxies, other_mails, guest);
            proptest::prop_assert_eq!(primary_email(&user), user_emails(&user).into_iter().next());
        }
    }

    #[test]
    fn the_ranked_addresses_keep_their_order() {
        let user = user_with(
            Some("Mail@Contoso.com".into()),
            Some("upn@contoso.com".into()),
            vec![
                "smtp:second@contoso.com".into(),
                "SMTP:Primary@contoso.com".into(),
                "x500:/o=ignored".into(),
            ],
            vec!["other@example.org".into(), "mail@contoso.com".into()],
            false,
        );
        assert_eq!(
            user_emails(&user),
            [
                "mail@contoso.com",
                "primary@contoso.com",
                "upn@contoso.com",
                "second@contoso.com",
                "other@example.org",
            ]
        );
        let guest = user_with(
            None,
            Some("a_b.com#ext#@t.onmicrosoft.com".into()),
            Vec::new(),
            Vec::new(),
            false,
        );
        assert_eq!(
            primary_email(&guest),
            None,
            "an #EXT# UPN is never an address"
        );
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
