//! Mapping preview scores (SPEC §4): which PSA client a managed tenant most likely is. Domains
//! decide; a name only ever suggests.

use foldhash::{HashMap, HashMapExt};
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
///
/// This compares the tenant with every client; [`MappingIndex`] gives the same answer for
/// many tenants without doing so, and this function is its reference.
pub fn preview_state(
    tenant_display_name: &str,
    tenant_domains: &[String],
    clients: &[ClientForMapping],
) -> MappingPreview {
    let tenant = TenantKey::new(tenant_display_name, tenant_domains);
    let candidates = clients
        .iter()
        .filter_map(|client| {
            let client_name = normalize_company_name(&client.name);
            candidate_for(&tenant, client, &client_name)
        })
        .collect();
    finish_preview(candidates)
}

/// A managed tenant's side of the comparison, normalized once.
struct TenantKey {
    domains: Vec<String>,
    name: String,
}

impl TenantKey {
    fn new(display_name: &str, domains: &[String]) -> TenantKey {
        TenantKey {
            domains: domains
                .iter()
                .map(|domain| normalize_domain(domain))
                .collect(),
            name: normalize_company_name(display_name),
        }
    }

    fn shares_domain(&self, domains: &[String]) -> bool {
        domains
            .iter()
            .any(|domain| self.domains.contains(&normalize_domain(domain)))
    }
}

/// Whether (and why) one client is a candidate for the tenant; `client_name` is the client's
/// normalized name. The one place the rules of a single comparison live.
fn candidate_for(
    tenant: &TenantKey,
    client: &ClientForMapping,
    client_name: &str,
) -> Option<MappingCandidate> {
    let (reason, score) = if tenant.shares_domain(&client.domains) {
        (MatchReason::PrimaryDomain, PRIMARY_DOMAIN_SCORE)
    } else if tenant.shares_domain(&client.secondary_domains) {
        (MatchReason::SecondaryDomain, SECONDARY_DOMAIN_SCORE)
    } else {
        if tenant.name.is_empty() || client_name.is_empty() {
            return None;
        }
        let score = name_similarity(&tenant.name, client_name);
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
}

/// Orders the candidates, derives the state and keeps the best five.
fn finish_preview(mut candidates: Vec<MappingCandidate>) -> MappingPreview {
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

/// A bigram of a name with its occurrence number, so that the multiset intersection the
/// similarity counts becomes a plain set intersection.
type Token = (char, char, u32);

/// The clients of a PSA tenant, indexed so that previewing a managed tenant looks at the few
/// clients that can be candidates instead of all of them: domain lookups for the domain
/// reasons, and a prefix-filtered bigram index for names.
///
/// The name index is exact, not a heuristic. A client scores at least the threshold `t` only
/// if its name shares at least `o >= t·n/(2-t)` bigrams with the tenant's (`n` the tenant's
/// bigram count; symmetric for the client) — the similarity divides twice the shared bigrams
/// by at least the sum of both counts, and a shared count is at most either. With every
/// name's bigrams sorted in one global order (rarest first), two names sharing `o` bigrams
/// share one among the first `n - o + 1` of each (the smallest shared bigram is that early
/// in both lists), so indexing only those prefixes loses no candidate; every candidate is
/// then scored exactly as [`preview_state`] scores it.
///
/// Probing is PPJoin's. Each bigram is numbered by its place in the global order (its rank),
/// so a name is a sorted list of integers. Postings carry the client's bigram count and the
/// bigram's place in the client's order and are sorted by bigram count, so only comparable
/// lengths are read; a running overlap per client drops a client once the bigrams left on
/// either side cannot lift the overlap to what the two lengths need (the positional filter).
/// Before any of that, a posting is passed over when the client's bigram signature (its ranks
/// folded into 128 bits, carried in the posting) has more bits the name lacks than the two
/// lengths allow to be missing (on the names of `make bench`, 98.7% of the clients the
/// prefixes share).
/// A surviving client's overlap is then counted to the end over the name's bigrams marked by
/// rank, stopping as soon as the threshold is out of reach.
#[derive(Clone, Debug)]
pub struct MappingIndex {
    clients: Vec<ClientForMapping>,
    /// Normalized names, by client position.
    names: Vec<String>,
    primary_domains: HashMap<String, Vec<usize>>,
    secondary_domains: HashMap<String, Vec<usize>>,
    /// Clients by whitespace-free normalized name: names too short for a bigram are equal or
    /// not similar at all.
    exact_names: HashMap<String, Vec<usize>>,
    /// Each client bigram's rank in the global order: (clients whose name has it, bigram).
    ranks: HashMap<Token, u32>,
    /// By rank: the clients with that bigram in their name's prefix, in bigram-count order.
    postings: Vec<Vec<Posting>>,
    /// Every client's bigram ranks, ascending (the global order), one client after another:
    /// client `c`'s are `client_ranks[rank_starts[c]..rank_starts[c + 1]]`. One array rather
    /// than a list per client, so checking a client's overlap reads one place in memory.
    client_ranks: Vec<u32>,
    rank_starts: Vec<usize>,
    /// Clients with names too long for a [`Posting`] (tens of thousands of characters):
    /// scored against every tenant, as the reference does.
    unindexed: Vec<usize>,
}

/// A set of bigram ranks folded into 128 bits (rank modulo 128). Every bit a client's
/// signature has and a name's lacks stands for at least one of the client's bigrams the name
/// does not have, which bounds their overlap from above without reading the client's bigrams.
#[derive(Clone, Copy, Debug, Default)]
struct Signature([u64; 2]);

impl Signature {
    fn of(ranks: &[u32]) -> Signature {
        let mut words = [0u64; 2];
        for rank in ranks {
            let bit = rank % 128;
            if let Some(word) = words.get_mut((bit / 64) as usize) {
                *word |= 1 << (bit % 64);
            }
        }
        Signature(words)
    }

    /// How many bits this signature has that `other` lacks: at least as many of this set's
    /// ranks are not in `other`'s set.
    fn surely_missing_from(self, other: Signature) -> usize {
        let [a, b] = self.0;
        let [x, y] = other.0;
        ((a & !x).count_ones() + (b & !y).count_ones()) as usize
    }
}

/// A client in the posting list of one of its prefix bigrams. It carries the client's
/// signature, so the probe rules most clients out reading the list alone.
#[derive(Clone, Copy, Debug)]
struct Posting {
    signature: Signature,
    client: u32,
    /// The bigram's place in the client's global order.
    place: u16,
    /// The client's bigram count.
    tokens: u16,
}

impl Posting {
    fn client(self) -> usize {
        self.client as usize
    }

    fn place(self) -> usize {
        usize::from(self.place)
    }

    fn tokens(self) -> usize {
        usize::from(self.tokens)
    }
}

/// A running overlap's mark for a client the positional filter dropped.
const DROPPED: i32 = -1;

thread_local! {
    /// A probe's scratch, left clean between probes (a probe resets what it touched), so a
    /// probe costs what it reads rather than the number of clients or bigrams.
    static SCRATCH: std::cell::RefCell<Scratch> =
        const { std::cell::RefCell::new(Scratch { overlaps: Vec::new(), marks: Vec::new() }) };
}

struct Scratch {
    /// Running overlaps by client position.
    overlaps: Vec<Running>,
    /// By rank: whether the probed name has that bigram.
    marks: Vec<bool>,
}

/// A client's running overlap during a probe: the shared bigrams counted so far (or
/// [`DROPPED`]) and the client's place after the last of them.
#[derive(Clone, Copy, Debug, Default)]
struct Running {
    shared: i32,
    client_next: u32,
}

impl MappingIndex {
    pub fn new(clients: &[ClientForMapping]) -> MappingIndex {
        let names: Vec<String> = clients
            .iter()
            .map(|client| normalize_company_name(&client.name))
            .collect();
        let mut primary_domains: HashMap<String, Vec<usize>> = HashMap::new();
        let mut secondary_domains: HashMap<String, Vec<usize>> = HashMap::new();
        let mut exact_names: HashMap<String, Vec<usize>> = HashMap::new();
        let mut token_counts: HashMap<Token, u32> = HashMap::new();
        let mut client_tokens: Vec<Vec<Token>> = Vec::with_capacity(clients.len());
        for (position, (client, name)) in clients.iter().zip(&names).enumerate() {
            for (domains, index) in [
                (&client.domains, &mut primary_domains),
                (&client.secondary_domains, &mut secondary_domains),
            ] {
                for domain in domains {
                    let entry = index.entry(normalize_domain(domain)).or_default();
                    if entry.last() != Some(&position) {
                        entry.push(position);
                    }
                }
            }
            if name.is_empty() {
                client_tokens.push(Vec::new());
                continue;
            }
            exact_names
                .entry(without_whitespace(name))
                .or_default()
                .push(position);
            let tokens = name_tokens(name);
            for token in &tokens {
                *token_counts.entry(*token).or_insert(0) += 1;
            }
            client_tokens.push(tokens);
        }
        let mut ordered: Vec<(u32, Token)> = token_counts
            .into_iter()
            .map(|(token, count)| (count, token))
            .collect();
        ordered.sort_unstable();
        let ranks: HashMap<Token, u32> = ordered
            .iter()
            .enumerate()
            .map(|(rank, (_, token))| (*token, rank as u32))
            .collect();
        let mut postings: Vec<Vec<Posting>> = vec![Vec::new(); ranks.len()];
        let mut client_ranks = Vec::new();
        let mut rank_starts = Vec::with_capacity(client_tokens.len() + 1);
        rank_starts.push(0);
        let mut unindexed = Vec::new();
        for (position, tokens) in client_tokens.iter().enumerate() {
            let mut order: Vec<u32> = tokens
                .iter()
                .filter_map(|token| ranks.get(token).copied())
                .collect();
            order.sort_unstable();
            match (u32::try_from(position), u16::try_from(order.len())) {
                (Ok(client), Ok(count)) => {
                    let signature = Signature::of(&order);
                    let prefix = order.iter().take(prefix_length(order.len()));
                    for (place, rank) in (0..count).zip(prefix) {
                        if let Some(list) = postings.get_mut(*rank as usize) {
                            list.push(Posting {
                                signature,
                                client,
                                place,
                                tokens: count,
                            });
                        }
                    }
                }
                _ => unindexed.push(position),
            }
            client_ranks.extend_from_slice(&order);
            rank_starts.push(client_ranks.len());
        }
        for list in &mut postings {
            list.sort_by_key(|posting| (posting.tokens, posting.client));
            list.shrink_to_fit();
        }
        MappingIndex {
            clients: clients.to_vec(),
            names,
            primary_domains,
            secondary_domains,
            exact_names,
            ranks,
            postings,
            client_ranks,
            rank_starts,
            unindexed,
        }
    }

    /// The same preview as [`preview_state`] against the indexed clients.
    pub fn preview(&self, tenant_display_name: &str, tenant_domains: &[String]) -> MappingPreview {
        let tenant = TenantKey::new(tenant_display_name, tenant_domains);
        // Clients sharing a domain, or with the same name: scored exactly, whatever else.
        let mut positions: Vec<usize> = Vec::new();
        for domain in &tenant.domains {
            for index in [&self.primary_domains, &self.secondary_domains] {
                if let Some(found) = index.get(domain) {
                    positions.extend(found);
                }
            }
        }
        if !tenant.name.is_empty() {
            if let Some(found) = self.exact_names.get(&without_whitespace(&tenant.name)) {
                positions.extend(found);
            }
            positions.extend(&self.unindexed);
        }
        positions.sort_unstable();
        positions.dedup();
        // Clients that can only be candidates by name: those the probe keeps (type docs) and
        // whose overlap reaches the threshold; only those are scored exactly.
        if !tenant.name.is_empty() {
            let tokens = name_tokens(&tenant.name);
            let mut known: Vec<u32> = tokens
                .iter()
                .filter_map(|token| self.ranks.get(token).copied())
                .collect();
            known.sort_unstable();
            let n = tokens.len();
            let by_name: Vec<usize> = self
                .name_matches(&known, n)
                .into_iter()
                .filter(|client| positions.binary_search(client).is_err())
                .collect();
            positions.extend(by_name);
        }
        let candidates = positions
            .into_iter()
            .filter_map(|position| {
                let client = self.clients.get(position)?;
                let name = self.names.get(position)?;
                candidate_for(&tenant, client, name)
            })
            .collect();
        finish_preview(candidates)
    }

    /// Clients whose name reaches the threshold against a name of `n` bigrams whose ranks
    /// among the clients' are `known` (ascending; the other `n - known.len()` bigrams no
    /// client has, and they come first in the global order), each once, in no particular
    /// order: the prefix probe with the length and positional filters (type docs), then each
    /// surviving client's overlap counted to the end.
    ///
    /// The probe counts every shared bigram up to the last one it finds, since all of those
    /// lie in both probed prefixes; a shared bigram after it comes later in the global order,
    /// so counting the client's later bigrams that the name has (marked by rank) completes the
    /// overlap without merging the two lists.
    fn name_matches(&self, known: &[u32], n: usize) -> Vec<usize> {
        let lengths = comparable_lengths(n);
        let unknown = n - known.len();
        // `least_overlap(n, m)` for every comparable `m`, computed once per probe.
        let needs: Vec<usize> = (0..=*lengths.end()).map(|m| least_overlap(n, m)).collect();
        let signature = Signature::of(known);
        SCRATCH.with(|scratch| {
            let Scratch { overlaps, marks } = &mut *scratch.borrow_mut();
            if overlaps.len() < self.clients.len() {
                overlaps.resize(self.clients.len(), Running::default());
            }
            if marks.len() < self.postings.len() {
                marks.resize(self.postings.len(), false);
            }
            let mut touched: Vec<usize> = Vec::new();
            let probed = prefix_length(n).saturating_sub(unknown);
            for (offset, rank) in known.iter().take(probed).enumerate() {
                let place = unknown + offset;
                let Some(list) = self.postings.get(*rank as usize) else {
                    continue;
                };
                // A client of `m` bigrams shares at least `least_overlap(n, m)` of them, so its
                // first shared one is no later than place `n - least_overlap(n, m)` here: from
                // this place on, only clients short enough for that are left to find.
                let longest = longest_sharing_from(n, place).min(*lengths.end());
                let start = list.partition_point(|posting| posting.tokens() < *lengths.start());
                let end = list.partition_point(|posting| posting.tokens() <= longest);
                for posting in list.get(start..end).unwrap_or_default() {
                    // The bigrams the client surely lacks bound what it can share: most
                    // clients are ruled out here, without touching their running overlap.
                    let need = needs.get(posting.tokens()).copied().unwrap_or(usize::MAX);
                    let lacking = posting.signature.surely_missing_from(signature);
                    if posting.tokens() < need + lacking {
                        continue;
                    }
                    let Some(running) = overlaps.get_mut(posting.client()) else {
                        continue;
                    };
                    if running.shared < 0 {
                        continue;
                    }
                    if running.shared == 0 {
                        touched.push(posting.client());
                    }
                    // Every shared bigram before `place` here (and so before `posting.place`
                    // there) has been counted: this one and those after both are all that
                    // can follow.
                    let left = (n - place - 1).min(posting.tokens() - posting.place() - 1);
                    let reachable = running.shared as usize + 1 + left;
                    if reachable >= need {
                        running.shared += 1;
                        running.client_next = u32::from(posting.place) + 1;
                    } else {
                        running.shared = DROPPED;
                    }
                }
            }
            for rank in known {
                if let Some(mark) = marks.get_mut(*rank as usize) {
                    *mark = true;
                }
            }
            let mut matches = Vec::new();
            for client in touched {
                let Some(running) = overlaps.get_mut(client) else {
                    continue;
                };
                let found = std::mem::take(running);
                if found.shared <= 0 {
                    continue;
                }
                let Some(ranks) = self.ranks_of(client) else {
                    continue;
                };
                let need = least_overlap(n, ranks.len());
                let rest = ranks.get(found.client_next as usize..).unwrap_or_default();
                if reaches(marks, rest, found.shared as usize, need) {
                    matches.push(client);
                }
            }
            for rank in known {
                if let Some(mark) = marks.get_mut(*rank as usize) {
                    *mark = false;
                }
            }
            matches
        })
    }

    /// The client's bigram ranks, ascending.
    fn ranks_of(&self, client: usize) -> Option<&[u32]> {
        let start = *self.rank_starts.get(client)?;
        let end = *self.rank_starts.get(client + 1)?;
        self.client_ranks.get(start..end)
    }
}

/// Whether `shared` bigrams plus those of `rest` that are `marks`ed reach `need`; gives up as
/// soon as too many of `rest` are missing.
fn reaches(marks: &[bool], rest: &[u32], shared: usize, need: usize) -> bool {
    let Some(mut may_miss) = (shared + rest.len()).checked_sub(need) else {
        return false;
    };
    for rank in rest {
        if !marks.get(*rank as usize).copied().unwrap_or(false) {
            if may_miss == 0 {
                return false;
            }
            may_miss -= 1;
        }
    }
    true
}

fn without_whitespace(name: &str) -> String {
    name.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The bigrams the similarity compares (of the name without whitespace), each numbered by
/// its occurrence, in bigram order.
fn name_tokens(name: &str) -> Vec<Token> {
    let chars: Vec<char> = name.chars().filter(|c| !c.is_whitespace()).collect();
    let mut tokens: Vec<Token> = chars.windows(2).map(|pair| (pair[0], pair[1], 1)).collect();
    tokens.sort_unstable();
    for at in 1..tokens.len() {
        if let [before, token] = &mut tokens[at - 1..=at] {
            if (before.0, before.1) == (token.0, token.1) {
                token.2 = before.2 + 1;
            }
        }
    }
    tokens
}

/// The token counts `m` a name of `n` tokens can be similar to: the similarity is at most
/// `2·min(n, m)/(n + m)`, so `m` lies within `[t·n/(2-t), n·(2-t)/t]` (with a rounding
/// tolerance that only widens the range).
fn comparable_lengths(n: usize) -> std::ops::RangeInclusive<usize> {
    let t = NAME_MATCH_THRESHOLD;
    let low = (t * n as f64 / (2.0 - t) - 1e-9).ceil().max(0.0) as usize;
    let high = (n as f64 * (2.0 - t) / t + 1e-9).floor() as usize;
    low..=high
}

/// The least overlap two names of `n` and `m` bigrams share if they score the threshold:
/// `2·o/(n + m) >= t`, lowered by a tolerance so a borderline pair is kept.
fn least_overlap(n: usize, m: usize) -> usize {
    let t = NAME_MATCH_THRESHOLD;
    (t * (n + m) as f64 / 2.0 - 1e-9).ceil().max(1.0) as usize
}

/// The most bigrams a client can have and still have its first bigram shared with a name of
/// `n` bigrams at `place` or later: `least_overlap(n, m) <= n - place`, i.e.
/// `m <= 2·(n - place)/t - n`, raised by a tolerance so a borderline length is kept.
fn longest_sharing_from(n: usize, place: usize) -> usize {
    let t = NAME_MATCH_THRESHOLD;
    let bound = 2.0 * ((n - place) as f64 + 1e-9) / t - n as f64 + 1e-6;
    if bound < 0.0 {
        0
    } else {
        bound.floor() as usize
    }
}

/// How many of a name's `n` sorted tokens must be indexed or probed: `n - o + 1` for the
/// least overlap `o` a name scoring the threshold can have (module docs of [`MappingIndex`]).
/// The bound is rounded up only beyond a rounding tolerance: a bound one too small would only
/// lengthen the prefix, one too large would lose candidates.
fn prefix_length(n: usize) -> usize {
    let t = NAME_MATCH_THRESHOLD;
    let least_overlap = (t * n as f64 / (2.0 - t) - 1e-9).ceil().max(1.0) as usize;
    (n + 1).saturating_sub(least_overlap).min(n)
}
