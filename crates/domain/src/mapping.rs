//! Mapping preview scores (SPEC §4): which PSA client a managed tenant most likely is. Domains
//! decide; a name only ever suggests.

use std::cmp::Ordering;
use uuid::Uuid;

/// Name similarity at or above which a client is offered as a candidate.
pub const NAME_MATCH_THRESHOLD: f64 = 0.85;

/// Candidates shown for one managed tenant.
pub const MAX_CANDIDATES: usize = 5;

/// Score given to a domain match, so domain candidates rank by kind before any name.
pub const PRIMARY_DOMAIN_SCORE: f64 = 1.0;
pub const SECONDARY_DOMAIN_SCORE: f64 = 0.9;

/// Legal-form words dropped from the end of a company name before comparing.
const LEGAL_SUFFIXES: &[&str] = &[
    "ab",
    "ag",
    "as",
    "asa",
    "bv",
    "bvba",
    "co",
    "company",
    "corp",
    "corporation",
    "gmbh",
    "inc",
    "incorporated",
    "kg",
    "kk",
    "limited",
    "llc",
    "llp",
    "lp",
    "ltd",
    "ltda",
    "nv",
    "oy",
    "plc",
    "pte",
    "pty",
    "sa",
    "sarl",
    "sas",
    "se",
    "sl",
    "spa",
    "srl",
    "ug",
];

/// A client as the preview sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientForMapping {
    pub client_id: Uuid,
    pub name: String,
    pub domains: Vec<String>,
    pub secondary_domains: Vec<String>,
}

/// Why a client is a candidate, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchReason {
    PrimaryDomain,
    SecondaryDomain,
    Name,
}

impl MatchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchReason::PrimaryDomain => "primary_domain",
            MatchReason::SecondaryDomain => "secondary_domain",
            MatchReason::Name => "name",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MappingCandidate {
    pub client_id: Uuid,
    pub name: String,
    /// 1.0 for a primary domain, 0.9 for a secondary domain, the name similarity otherwise.
    pub score: f64,
    pub reason: MatchReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingState {
    AutoMatched { client_id: Uuid },
    NeedsReview,
    Unmatched,
}

impl MappingState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MappingState::AutoMatched { .. } => "auto_matched",
            MappingState::NeedsReview => "needs_review",
            MappingState::Unmatched => "unmatched",
        }
    }
}

/// The preview of one undecided managed tenant. `candidates` (at most five, best first) is
/// filled for every state, so an auto-matched tenant also shows why it matched.
#[derive(Clone, Debug, PartialEq)]
pub struct MappingPreview {
    pub state: MappingState,
    pub candidates: Vec<MappingCandidate>,
}

/// Lowercases, turns punctuation into spaces and drops trailing legal forms, so
/// `"Contoso, Inc."` and `"CONTOSO LLC"` both become `"contoso"`. A name made only of legal
/// words is kept whole rather than emptied.
pub fn normalize_company_name(name: &str) -> String {
    let lowered = name.to_lowercase();
    // `&` joins words ("Smith & Sons"); dots inside a legal form ("G.m.b.H.", "S.A.") must not
    // split it, so they are removed rather than turned into spaces.
    let cleaned: String = lowered
        .chars()
        .filter(|c| *c != '.' && *c != '\'')
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    while words.len() > 1
        && words
            .last()
            .is_some_and(|word| LEGAL_SUFFIXES.contains(word))
    {
        words.pop();
    }
    words.join(" ")
}

/// Similarity of two company names in [0, 1]: Jaro-Winkler on the normalized names.
pub fn score_name(a: &str, b: &str) -> f64 {
    let a = normalize_company_name(a);
    let b = normalize_company_name(b);
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    name_similarity(&a, &b)
}

/// Similarity of two normalized names: Sørensen–Dice over character bigrams. Unlike
/// Jaro-Winkler it does not reward a shared first word, so "Stonebridge Dental" and
/// "Stonebridge Architects" stay apart while typos and spacing still score high.
fn name_similarity(a: &str, b: &str) -> f64 {
    strsim::sorensen_dice(a, b)
}

fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_lowercase()
}

/// The preview state of a managed tenant named `tenant_display_name` with `tenant_domains`
/// against the PSA tenant's clients. Auto-matched iff exactly one client lists one of the
/// tenant's domains among its primary `domains`.
pub fn preview_state(
    tenant_display_name: &str,
    tenant_domains: &[String],
    clients: &[ClientForMapping],
) -> MappingPreview {
    let tenant_domains: Vec<String> = tenant_domains
        .iter()
        .map(|domain| normalize_domain(domain))
        .collect();
    let shares_domain = |domains: &[String]| {
        domains
            .iter()
            .any(|domain| tenant_domains.contains(&normalize_domain(domain)))
    };
    let tenant_name = normalize_company_name(tenant_display_name);
    let mut candidates: Vec<MappingCandidate> = clients
        .iter()
        .filter_map(|client| {
            let (reason, score) = if shares_domain(&client.domains) {
                (MatchReason::PrimaryDomain, PRIMARY_DOMAIN_SCORE)
            } else if shares_domain(&client.secondary_domains) {
                (MatchReason::SecondaryDomain, SECONDARY_DOMAIN_SCORE)
            } else {
                let client_name = normalize_company_name(&client.name);
                if tenant_name.is_empty() || client_name.is_empty() {
                    return None;
                }
                let score = name_similarity(&tenant_name, &client_name);
                if score < NAME_MATCH_THRESHOLD {
                    return None;
                }
                (MatchReason::Name, score)
            };
            Some(MappingCandidate {
                client_id: client.client_id,
                name: client.name.clone(),
                score,
                reason,
            })
        })
        .collect();
    candidates.sort_by(|a, b| {
        a.reason
            .cmp(&b.reason)
            .then(b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal))
            .then_with(|| a.name.cmp(&b.name))
            .then(a.client_id.cmp(&b.client_id))
    });
    let primary: Vec<Uuid> = candidates
        .iter()
        .filter(|candidate| candidate.reason == MatchReason::PrimaryDomain)
        .map(|candidate| candidate.client_id)
        .collect();
    let state = match primary.as_slice() {
        [client_id] => MappingState::AutoMatched {
            client_id: *client_id,
        },
        _ if candidates.is_empty() => MappingState::Unmatched,
        _ => MappingState::NeedsReview,
    };
    candidates.truncate(MAX_CANDIDATES);
    MappingPreview { state, candidates }
}
