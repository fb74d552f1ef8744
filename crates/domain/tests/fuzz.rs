//! Fuzz targets for email normalization, run on the stable toolchain as property tests:
//! arbitrary strings (and address-shaped ones) never panic, and whatever comes out is a
//! fixed point, lowercase, one `@`, within the RFC 5321 limits, with a domain `is_domain`
//! accepts. The page planner's target is `properties.rs`. `ENTRA_SYNC_FUZZ_CASES` raises the
//! case count for a long run.

use entra_sync_domain::email::{email_domain, is_domain, normalize_email, MAX_EMAIL_LEN};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("ENTRA_SYNC_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000)
}

fn address_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,70}@\\PC{0,70}",
        "[ \\t]{0,2}[A-Za-z0-9._%+İßẞǅ-]{0,66}@[A-Za-z0-9İß-]{0,64}(\\.[A-Za-z0-9İ-]{0,64}){0,4}[ \\t]{0,2}",
        "\"[a-z ]{0,10}\" <[a-z]{1,10}@[a-z]{1,10}\\.com>",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn normalized_addresses_are_well_formed_fixed_points(raw in address_like()) {
        if let Some(normalized) = normalize_email(&raw) {
            prop_assert_eq!(normalize_email(&normalized), Some(normalized.clone()));
            prop_assert_eq!(normalized.clone(), normalized.to_lowercase());
            prop_assert!(normalized.len() <= MAX_EMAIL_LEN);
            prop_assert_eq!(normalized.matches('@').count(), 1);
            let domain = email_domain(&normalized);
            prop_assert!(domain.is_some_and(is_domain), "{:?}", domain);
            prop_assert!(!normalized.chars().any(char::is_whitespace));
        }
    }
}
