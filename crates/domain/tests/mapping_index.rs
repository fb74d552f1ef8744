//! The indexed mapping preview (`MappingIndex`) against the brute-force reference
//! (`preview_state`, every tenant compared with every client) on generated data: company names
//! from a shared vocabulary with typos, legal suffixes, spacing changes, very short and
//! non-ASCII names, and domains drawn from a small pool so that primary and secondary domain
//! matches, several candidates and near-threshold name scores all occur.

use entra_sync_domain::mapping::{preview_state, ClientForMapping, MappingIndex, MappingState};
use proptest::prelude::*;
use uuid::Uuid;

const WORDS: &[&str] = &[
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Stonebridge",
    "Dental",
    "Architects",
    "Legal",
    "Logistics",
    "Blue",
    "Yonder",
    "Müller",
    "Zürich",
    "Å",
    "x",
    "Co",
    "Inc.",
    "LLC",
    "GmbH",
    "&",
];

const DOMAINS: &[&str] = &[
    "contoso.com",
    "Contoso.com.",
    " fabrikam.de",
    "northwind.example",
    "stonebridge-dental.com",
    "blue.example",
    "yonder.co.uk",
    "müller.de",
];

/// One edit of a name: a typo, a dropped or doubled character, or a space moved.
fn edit(name: String, kind: u8, at: usize) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if chars.is_empty() {
        return name;
    }
    let at = at % chars.len();
    match kind % 5 {
        0 => chars[at] = 'q',
        1 => {
            chars.remove(at);
        }
        2 => chars.insert(at, chars[at]),
        3 => chars.insert(at, ' '),
        _ => chars.retain(|c| *c != ' '),
    }
    chars.into_iter().collect()
}

fn name() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(proptest::sample::select(WORDS), 1..4),
        proptest::collection::vec((any::<u8>(), any::<usize>()), 0..3),
    )
        .prop_map(|(words, edits)| {
            edits
                .into_iter()
                .fold(words.join(" "), |name, (kind, at)| edit(name, kind, at))
        })
}

fn domains() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        proptest::sample::select(DOMAINS).prop_map(str::to_owned),
        0..3,
    )
}

fn clients() -> impl Strategy<Value = Vec<ClientForMapping>> {
    proptest::collection::vec((name(), domains(), domains()), 0..120).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(
                |(index, (name, domains, secondary_domains))| ClientForMapping {
                    client_id: Uuid::from_u128(index as u128 + 1),
                    name,
                    domains,
                    secondary_domains,
                },
            )
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn indexed_preview_equals_brute_force(
        clients in clients(),
        tenants in proptest::collection::vec((name(), domains()), 1..30),
    ) {
        let index = MappingIndex::new(&clients);
        for (tenant_name, tenant_domains) in &tenants {
            let reference = preview_state(tenant_name, tenant_domains, &clients);
            let indexed = index.preview(tenant_name, tenant_domains);
            prop_assert_eq!(indexed, reference, "tenant {:?} {:?}", tenant_name, tenant_domains);
        }
    }
}

/// Names one typo apart from a client's must be found through the name index, and the
/// generated data must really contain such matches (or the property above proves little).
#[test]
fn indexed_preview_finds_name_candidates() {
    let clients: Vec<ClientForMapping> = ["Stonebridge Dental", "Northwind Logistics", "Ab"]
        .iter()
        .enumerate()
        .map(|(index, name)| ClientForMapping {
            client_id: Uuid::from_u128(index as u128 + 1),
            name: (*name).to_owned(),
            domains: Vec::new(),
            secondary_domains: Vec::new(),
        })
        .collect();
    let index = MappingIndex::new(&clients);
    for tenant in ["Stonebridge Dentl LLC", "North wind Logistics", "A b"] {
        let indexed = index.preview(tenant, &[]);
        assert_eq!(indexed, preview_state(tenant, &[], &clients));
        assert_eq!(indexed.state, MappingState::NeedsReview, "{tenant}");
        assert_eq!(indexed.candidates.len(), 1, "{tenant}");
    }
}

/// A client name too long for the name index (over 65,535 bigrams) is still compared: a
/// tenant named like it but for one character is offered it, as the reference offers it.
#[test]
fn indexed_preview_compares_names_too_long_to_index() {
    let long: String = (0..70_000)
        .map(|i| char::from(b'a' + (i % 23) as u8))
        .collect();
    let mut near = long.clone();
    near.replace_range(35_000..35_001, "z");
    let clients = vec![ClientForMapping {
        client_id: Uuid::from_u128(1),
        name: long,
        domains: Vec::new(),
        secondary_domains: Vec::new(),
    }];
    let index = MappingIndex::new(&clients);
    let indexed = index.preview(&near, &[]);
    assert_eq!(indexed, preview_state(&near, &[], &clients));
    assert_eq!(indexed.candidates.len(), 1);
}
