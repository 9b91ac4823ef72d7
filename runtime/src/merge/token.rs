//! Page tokens: where the next page starts, bound to the filter that produced it.
//!
//! A token is stateless: it holds the merge key of the last item served, `(name, source, identifier)`,
//! and a fingerprint of the filter. Any server with the same sources can serve the next page, and since
//! the listing resumes *after a key* rather than at an offset, items that exist before and after a
//! change to a source's data are neither repeated nor skipped.
//!
//! In an order other than by name the token also holds the last item's sort key before its name
//! ([`Primary`]: its relevance score, or its date), and a token is only good for the order that
//! issued it.
//!
//! Wire form: URL-safe base64 (no padding) of
//! `version (1 byte) | filter fingerprint (8) | [order] | name | source | identifier | checksum (4)`,
//! each string as a 4-byte little-endian length and its UTF-8 bytes, the checksum being the first 4
//! bytes of the SHA-256 of everything before it. Version 1 is name order and has no `order` part
//! (the tokens of earlier releases); version 2 has it: a byte for the order (1 relevance, 2 updated)
//! then the key: a 4-byte little-endian score, or a byte saying whether the item has a date and the
//! date as a string. The checksum catches truncation and accidental edits; a token is
//! not a secret and not a capability: an edited token can only move where a listing the client may
//! read anyway resumes.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use sha2::{Digest, Sha256};

/// The token format of name order (what earlier releases wrote and read).
pub const VERSION: u8 = 1;
/// The token format of the other orders.
pub const VERSION_ORDERED: u8 = 2;
/// Longest token accepted, in characters: well above any real key, far below a request limit.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The position of an item in the merged order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MergeKey {
    pub name: String,
    pub source: String,
    pub identifier: String,
}

/// The part of an item's position in the merged order that comes before its name: nothing in name
/// order, the relevance score in relevance order (higher first), the date in updated order (newer
/// first, items without one last).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Primary {
    #[default]
    Name,
    Relevance(u32),
    Updated(Option<String>),
}

impl Primary {
    /// The order's name, as requests and messages spell it.
    pub fn order_name(&self) -> &'static str {
        match self {
            Primary::Name => "name",
            Primary::Relevance(_) => "relevance",
            Primary::Updated(_) => "updated",
        }
    }
}

/// A decoded token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub filter_fingerprint: [u8; 8],
    /// The last item's key before its name; [`Primary::Name`] in name order.
    pub primary: Primary,
    pub last: MergeKey,
}

/// Why a token was refused. Every variant is the client's error (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("page_token is longer than {MAX_TOKEN_LEN} characters")]
    TooLong,
    #[error("page_token is not a token issued by this server (not URL-safe base64)")]
    NotBase64,
    #[error("page_token is truncated or malformed")]
    Malformed,
    #[error("page_token has format version {0}, this server reads versions {VERSION} and {VERSION_ORDERED}; start again without a token")]
    Version(u8),
    #[error("page_token checksum does not match: the token was altered or truncated")]
    Checksum,
    #[error("page_token was issued for a different filter: send the filter of the first page, or start again without a token")]
    FilterMismatch,
    #[error("page_token was issued for sort order {issued}, this request asks for {asked}: send the sort of the first page, or start again without a token")]
    SortMismatch {
        issued: &'static str,
        asked: &'static str,
    },
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(bytes);
    [digest[0], digest[1], digest[2], digest[3]]
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl PageToken {
    pub fn encode(&self) -> String {
        let last = &self.last;
        let mut bytes = Vec::with_capacity(
            1 + 8 + 12 + last.name.len() + last.source.len() + last.identifier.len() + 4 + 16,
        );
        bytes.push(match self.primary {
            Primary::Name => VERSION,
            _ => VERSION_ORDERED,
        });
        bytes.extend_from_slice(&self.filter_fingerprint);
        match &self.primary {
            Primary::Name => {}
            Primary::Relevance(score) => {
                bytes.push(1);
                bytes.extend_from_slice(&score.to_le_bytes());
            }
            Primary::Updated(date) => {
                bytes.push(2);
                bytes.push(u8::from(date.is_some()));
                put_str(&mut bytes, date.as_deref().unwrap_or(""));
            }
        }
        put_str(&mut bytes, &last.name);
        put_str(&mut bytes, &last.source);
        put_str(&mut bytes, &last.identifier);
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a token and checks that it belongs to the filter with `expected_fingerprint` and
    /// to the order `expected` (the request's; only the kind of [`Primary`] is compared).
    pub fn decode_for(
        token: &str,
        expected_fingerprint: [u8; 8],
        expected: &Primary,
    ) -> Result<PageToken, TokenError> {
        let decoded = PageToken::decode(token, expected_fingerprint)?;
        if std::mem::discriminant(&decoded.primary) != std::mem::discriminant(expected) {
            return Err(TokenError::SortMismatch {
                issued: decoded.primary.order_name(),
                asked: expected.order_name(),
            });
        }
        Ok(decoded)
    }

    /// Decodes a token of any order and checks that it belongs to the filter with
    /// `expected_fingerprint`.
    pub fn decode(token: &str, expected_fingerprint: [u8; 8]) -> Result<PageToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::NotBase64)?;
        let (&version, _) = bytes.split_first().ok_or(TokenError::Malformed)?;
        if version != VERSION && version != VERSION_ORDERED {
            // A checksum over a foreign layout means nothing; report the version first only when
            // the token is otherwise plausible, so that random bytes read as "malformed".
            if bytes.len() >= 5 && checksum(&bytes[..bytes.len() - 4]) == bytes[bytes.len() - 4..] {
                return Err(TokenError::Version(version));
            }
            return Err(TokenError::Malformed);
        }
        if bytes.len() < 1 + 8 + 12 + 4 {
            return Err(TokenError::Malformed);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if checksum(body) != sum {
            return Err(TokenError::Checksum);
        }
        let mut reader = Reader { rest: &body[1..] };
        let filter_fingerprint: [u8; 8] = reader.take(8)?.try_into().expect("8 bytes");
        let primary = if version == VERSION {
            Primary::Name
        } else {
            match reader.take(1)?[0] {
                1 => Primary::Relevance(u32::from_le_bytes(
                    reader.take(4)?.try_into().expect("4 bytes"),
                )),
                2 => {
                    let dated = reader.take(1)?[0];
                    let date = reader.string()?;
                    match (dated, date.is_empty()) {
                        (0, true) => Primary::Updated(None),
                        (1, _) => Primary::Updated(Some(date)),
                        _ => return Err(TokenError::Malformed),
                    }
                }
                _ => return Err(TokenError::Malformed),
            }
        };
        let last = MergeKey {
            name: reader.string()?,
            source: reader.string()?,
            identifier: reader.string()?,
        };
        if !reader.rest.is_empty() {
            return Err(TokenError::Malformed);
        }
        if filter_fingerprint != expected_fingerprint {
            return Err(TokenError::FilterMismatch);
        }
        Ok(PageToken {
            filter_fingerprint,
            primary,
            last,
        })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.rest.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, TokenError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::Malformed)
    }
}

/// A fingerprint of a normalised filter: equal for filters that select the same items.
///
/// Each part is sorted and de-duplicated first, so `categories = [a, b]` and `[b, a, a]` share it.
pub fn filter_fingerprint(
    query: &str,
    categories: &[String],
    repositories: &[String],
    sources: &[String],
) -> [u8; 8] {
    filter_fingerprint_with(query, categories, repositories, sources, false)
}

/// [`filter_fingerprint`] that also covers `include_deprecated` (left out of the hash when false,
/// so the default filter's fingerprint is unchanged).
pub fn filter_fingerprint_with(
    query: &str,
    categories: &[String],
    repositories: &[String],
    sources: &[String],
    include_deprecated: bool,
) -> [u8; 8] {
    let mut hasher = Sha256::new();
    if include_deprecated {
        hasher.update(b"d");
    }
    let mut part = |label: u8, values: &mut dyn Iterator<Item = &str>| {
        hasher.update([label]);
        for v in values {
            hasher.update((v.len() as u32).to_le_bytes());
            hasher.update(v.as_bytes());
        }
    };
    part(b'q', &mut std::iter::once(query));
    for (label, list) in [(b'c', categories), (b'r', repositories), (b's', sources)] {
        let mut sorted: Vec<&str> = list.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        part(label, &mut sorted.into_iter());
    }
    let digest = hasher.finalize();
    digest[..8].try_into().expect("8 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> PageToken {
        PageToken {
            filter_fingerprint: filter_fingerprint("", &[], &[], &[]),
            primary: Primary::Name,
            last: MergeKey {
                name: "pkg-ü/1".into(),
                source: "a b".into(),
                identifier: "repo/pkg".into(),
            },
        }
    }

    #[test]
    fn round_trip_and_url_safe() {
        let t = token();
        let s = t.encode();
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(PageToken::decode(&s, t.filter_fingerprint), Ok(t));
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let t = token();
        let fp = t.filter_fingerprint;
        let good = t.encode();
        assert_eq!(PageToken::decode("null", fp), Err(TokenError::Malformed));
        assert_eq!(PageToken::decode("", fp), Err(TokenError::Malformed));
        assert_eq!(PageToken::decode("***", fp), Err(TokenError::NotBase64));
        assert_eq!(
            PageToken::decode(&"A".repeat(MAX_TOKEN_LEN + 1), fp),
            Err(TokenError::TooLong)
        );
        // Truncation at every length is refused.
        for cut in 0..good.len() {
            assert!(PageToken::decode(&good[..cut], fp).is_err(), "cut at {cut}");
        }
        // Every single-character edit is refused.
        for i in 0..good.len() {
            let mut edited = good.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(edited).unwrap();
            assert!(PageToken::decode(&edited, fp).is_err(), "edit at {i}");
        }
        // Another filter.
        let other = filter_fingerprint("redis", &[], &[], &[]);
        assert_eq!(
            PageToken::decode(&good, other),
            Err(TokenError::FilterMismatch)
        );
    }

    #[test]
    fn ordered_tokens_round_trip_and_keep_to_their_order() {
        let fp = filter_fingerprint("redis", &[], &[], &[]);
        for primary in [
            Primary::Relevance(0),
            Primary::Relevance(u32::MAX),
            Primary::Updated(None),
            Primary::Updated(Some("2024-01-02T03:04:05Z".into())),
        ] {
            let t = PageToken {
                filter_fingerprint: fp,
                primary: primary.clone(),
                ..token()
            };
            let s = t.encode();
            assert_eq!(PageToken::decode_for(&s, fp, &primary), Ok(t.clone()));
            assert_eq!(
                PageToken::decode_for(&s, fp, &Primary::Name),
                Err(TokenError::SortMismatch {
                    issued: primary.order_name(),
                    asked: "name"
                })
            );
        }
        // A name-order token is version 1, as earlier releases wrote it.
        let name = token().encode();
        assert_eq!(URL_SAFE_NO_PAD.decode(&name).unwrap()[0], VERSION);
        assert_eq!(
            PageToken::decode_for(&name, token().filter_fingerprint, &Primary::Relevance(3))
                .unwrap_err()
                .to_string(),
            "page_token was issued for sort order name, this request asks for relevance: send the sort of the first page, or start again without a token"
        );
    }

    #[test]
    fn other_version_is_named() {
        let mut bytes = URL_SAFE_NO_PAD.decode(token().encode()).unwrap();
        bytes[0] = 9;
        let n = bytes.len();
        let sum = checksum(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&sum);
        let s = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            PageToken::decode(&s, token().filter_fingerprint),
            Err(TokenError::Version(9))
        );
    }

    #[test]
    fn fingerprint_normalises() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            filter_fingerprint("q", &s(&["a", "b"]), &[], &[]),
            filter_fingerprint("q", &s(&["b", "a", "a"]), &[], &[])
        );
        assert_ne!(
            filter_fingerprint("q", &s(&["a"]), &[], &[]),
            filter_fingerprint("q", &[], &s(&["a"]), &[])
        );
        assert_ne!(
            filter_fingerprint("", &[], &[], &[]),
            filter_fingerprint("", &[], &[], &s(&["x"]))
        );
    }

    /// A mutation fuzzer over the decoder: valid tokens with bytes flipped, inserted, removed,
    /// truncated or spliced, plus random text. Nothing may panic, and anything that decodes must be
    /// the original token or re-encode to itself. TRIBUTARY_FUZZ_CASES sets the count (default
    /// 200,000); TRIBUTARY_FUZZ_SEED replays a run.
    #[test]
    fn fuzz_decoder() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let cases: u64 = std::env::var("TRIBUTARY_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let seed: u64 = std::env::var("TRIBUTARY_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        println!("TRIBUTARY_FUZZ_SEED={seed} TRIBUTARY_FUZZ_CASES={cases}");
        let mut rng = StdRng::seed_from_u64(seed);
        let fp = filter_fingerprint("", &[], &[], &[]);
        let alphabet =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.{}\"null ";
        let seeds: Vec<String> = ["", "a", "pkg-ü", "\0", "x\0y"]
            .iter()
            .map(|name| {
                PageToken {
                    filter_fingerprint: fp,
                    primary: match name.len() % 3 {
                        0 => Primary::Name,
                        1 => Primary::Relevance(name.len() as u32 * 7),
                        _ => Primary::Updated(Some("2024-01-02T03:04:05Z".into())),
                    },
                    last: MergeKey {
                        name: name.to_string(),
                        source: "src".into(),
                        identifier: "id/1".into(),
                    },
                }
                .encode()
            })
            .collect();
        let (mut accepted, mut refused) = (0u64, 0u64);
        for _ in 0..cases {
            let base = seeds[rng.random_range(0..seeds.len())].clone().into_bytes();
            let mut bytes = base.clone();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..6) {
                    0 if !bytes.is_empty() => {
                        let i = rng.random_range(0..bytes.len());
                        bytes[i] = alphabet[rng.random_range(0..alphabet.len())];
                    }
                    1 => {
                        let i = rng.random_range(0..=bytes.len());
                        bytes.insert(i, alphabet[rng.random_range(0..alphabet.len())]);
                    }
                    2 if !bytes.is_empty() => {
                        bytes.remove(rng.random_range(0..bytes.len()));
                    }
                    3 => bytes.truncate(rng.random_range(0..=bytes.len())),
                    4 => {
                        let other = &seeds[rng.random_range(0..seeds.len())];
                        let cut = rng.random_range(0..=bytes.len());
                        bytes.truncate(cut);
                        bytes.extend_from_slice(&other.as_bytes()[cut.min(other.len())..]);
                    }
                    _ => {
                        let n = rng.random_range(0..64);
                        bytes = (0..n).map(|_| rng.random::<u8>()).collect();
                    }
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            match PageToken::decode(&text, fp) {
                Ok(token) => {
                    assert_eq!(token.encode(), text, "a decoded token re-encodes to itself");
                    accepted += 1;
                }
                Err(_) => refused += 1,
            }
        }
        println!("fuzzed {cases} tokens: {accepted} decoded (valid), {refused} refused, 0 panics");
        assert!(refused > 0);
    }
}
