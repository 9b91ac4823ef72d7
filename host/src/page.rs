//! One page of a listing as the merge made it (the plugins' summaries, where they are, with the
//! page's token, failures and counts), and what is sent of it: the protobuf encoding of
//! `ListAvailablePackageSummariesResponse`, written straight from the summaries into one buffer
//! ([`Page::encode`]); its proto3 JSON mapping for REST, serialised from the summaries too
//! ([`JsonPage`]); or the generated message ([`Page::into_message`]) for callers that want one.
//!
//! The encoding does no check of its own: every summary in a page passed the contract's checks
//! when its source answered (`tributary_plugin_api::contract`, run by the merge: UTF-8 and size of
//! every text field, the count of categories, the order, unique identifiers), and the merge keeps
//! the page within its size. The bytes are the same, byte for byte, as prost's encoding of the
//! message [`Page::into_message`] makes, and the JSON the same as pbjson's serialisation of it
//! (tests hold both to it), so what a client reads does not depend on which one was sent.
//!
//! This module uses nothing of the host's but the contract's types.

use std::sync::Arc;

use abi_stable::std_types::{RString, RVec};
use prost::{
    bytes::BufMut,
    encoding::{self, encode_key, encode_varint, encoded_len_varint, key_len, WireType},
};
use serde::{ser::SerializeStruct, Serialize, Serializer};
use tributary_plugin_api::Summary;
use tributary_proto::{encoded::Encoded, v1 as pb};
use tributary_runtime::merge::Item;

/// Field numbers of `ListAvailablePackageSummariesResponse` (tributary.proto).
mod response {
    pub const SUMMARIES: u32 = 1;
    pub const NEXT_PAGE_TOKEN: u32 = 2;
    pub const FAILED_SOURCES: u32 = 3;
    pub const TOTAL_SIZE: u32 = 4;
    pub const FACETS: u32 = 5;
}

/// Field numbers of `AvailablePackageSummary`.
mod summary {
    pub const REF: u32 = 1;
    pub const NAME: u32 = 2;
    pub const DISPLAY_NAME: u32 = 3;
    pub const LATEST_VERSION: u32 = 4;
    pub const LATEST_APP_VERSION: u32 = 5;
    pub const SHORT_DESCRIPTION: u32 = 6;
    pub const ICON_URL: u32 = 7;
    pub const CATEGORIES: u32 = 8;
    pub const REPOSITORY: u32 = 9;
    pub const DEPRECATED: u32 = 10;
}

/// Field numbers of `AvailablePackageReference`.
mod reference {
    pub const SOURCE: u32 = 1;
    pub const IDENTIFIER: u32 = 2;
}

/// One page of `ListAvailablePackageSummaries`, before it is sent.
pub struct Page {
    /// The names of the sources the items' `source` indexes point into.
    pub(crate) sources: Vec<Arc<str>>,
    /// The page's items in order, as their sources returned them.
    pub(crate) items: Vec<Item>,
    pub next_page_token: String,
    pub failed_sources: Vec<pb::SourceFailure>,
    pub total_size: Option<u64>,
    pub facets: Option<pb::Facets>,
}

impl Page {
    /// How many items the page has.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The protobuf encoding of the page's `ListAvailablePackageSummariesResponse`.
    pub fn encode(&self) -> Vec<u8> {
        let summaries: Vec<usize> = self
            .items
            .iter()
            .map(|item| summary_len(&self.sources[item.source], &item.summary))
            .collect();
        let len = summaries
            .iter()
            .map(|&len| message_field_len(response::SUMMARIES, len))
            .sum::<usize>()
            + self.tail_len();
        let mut buf = Vec::with_capacity(len);
        for (item, &len) in self.items.iter().zip(&summaries) {
            encode_key(response::SUMMARIES, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            encode_summary(&self.sources[item.source], &item.summary, &mut buf);
        }
        self.encode_tail(&mut buf);
        debug_assert_eq!(buf.len(), len);
        buf
    }

    /// The length of the fields after the summaries.
    fn tail_len(&self) -> usize {
        let mut len = str_field_len(response::NEXT_PAGE_TOKEN, &self.next_page_token)
            + encoding::message::encoded_len_repeated(
                response::FAILED_SOURCES,
                &self.failed_sources,
            );
        if let Some(total) = self.total_size {
            len += encoding::uint64::encoded_len(response::TOTAL_SIZE, &total);
        }
        if let Some(facets) = &self.facets {
            len += encoding::message::encoded_len(response::FACETS, facets);
        }
        len
    }

    /// The fields after the summaries, in field order as prost writes them: small, and few, so
    /// prost writes them from the generated types.
    fn encode_tail(&self, buf: &mut Vec<u8>) {
        if !self.next_page_token.is_empty() {
            encoding::string::encode(response::NEXT_PAGE_TOKEN, &self.next_page_token, buf);
        }
        encoding::message::encode_repeated(response::FAILED_SOURCES, &self.failed_sources, buf);
        if let Some(total) = self.total_size {
            encoding::uint64::encode(response::TOTAL_SIZE, &total, buf);
        }
        if let Some(facets) = &self.facets {
            encoding::message::encode(response::FACETS, facets, buf);
        }
    }

    /// The page as the generated message (every string copied into the API's `String`s).
    pub fn into_message(self) -> pb::ListAvailablePackageSummariesResponse {
        let sources = self.sources;
        pb::ListAvailablePackageSummariesResponse {
            available_package_summaries: self
                .items
                .into_iter()
                .map(|item| summary_pb(&sources[item.source], item.summary))
                .collect(),
            next_page_token: self.next_page_token,
            failed_sources: self.failed_sources,
            total_size: self.total_size,
            facets: self.facets,
        }
    }
}

impl From<Page> for Encoded<pb::ListAvailablePackageSummariesResponse> {
    fn from(page: Page) -> Self {
        Encoded::from_bytes(page.encode())
    }
}

impl From<Page> for pb::ListAvailablePackageSummariesResponse {
    fn from(page: Page) -> Self {
        page.into_message()
    }
}

/// A page to send as JSON: serialised from the summaries in the proto3 JSON mapping, field for
/// field as pbjson serialises the generated `ListAvailablePackageSummariesResponse` (camelCase
/// names, empty fields left out, `totalSize` as a string).
pub struct JsonPage(pub Page);

impl From<Page> for JsonPage {
    fn from(page: Page) -> Self {
        JsonPage(page)
    }
}

impl Serialize for JsonPage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let page = &self.0;
        let len = usize::from(!page.items.is_empty())
            + usize::from(!page.next_page_token.is_empty())
            + usize::from(!page.failed_sources.is_empty())
            + usize::from(page.total_size.is_some())
            + usize::from(page.facets.is_some());
        let mut out = serializer
            .serialize_struct("tributary.v1.ListAvailablePackageSummariesResponse", len)?;
        if !page.items.is_empty() {
            out.serialize_field("availablePackageSummaries", &JsonItems(page))?;
        }
        if !page.next_page_token.is_empty() {
            out.serialize_field("nextPageToken", &page.next_page_token)?;
        }
        if !page.failed_sources.is_empty() {
            out.serialize_field("failedSources", &page.failed_sources)?;
        }
        if let Some(total) = page.total_size {
            out.serialize_field("totalSize", total.to_string().as_str())?;
        }
        if let Some(facets) = &page.facets {
            out.serialize_field("facets", facets)?;
        }
        out.end()
    }
}

struct JsonItems<'a>(&'a Page);

impl Serialize for JsonItems<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let page = self.0;
        serializer.collect_seq(page.items.iter().map(|item| JsonSummary {
            source: &page.sources[item.source],
            summary: &item.summary,
        }))
    }
}

struct JsonSummary<'a> {
    source: &'a str,
    summary: &'a Summary,
}

impl Serialize for JsonSummary<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.summary;
        let fields = [
            ("name", &s.name),
            ("displayName", &s.display_name),
            ("latestVersion", &s.latest_version),
            ("latestAppVersion", &s.latest_app_version),
            ("shortDescription", &s.short_description),
            ("iconUrl", &s.icon_url),
        ];
        let len = 1
            + fields.iter().filter(|(_, v)| !v.is_empty()).count()
            + usize::from(!s.categories.is_empty())
            + usize::from(!s.repository.is_empty())
            + usize::from(s.deprecated);
        let mut out = serializer.serialize_struct("tributary.v1.AvailablePackageSummary", len)?;
        out.serialize_field(
            "availablePackageRef",
            &JsonReference {
                source: self.source,
                identifier: &s.identifier,
            },
        )?;
        for (name, value) in fields {
            if !value.is_empty() {
                out.serialize_field(name, value.as_str())?;
            }
        }
        if !s.categories.is_empty() {
            out.serialize_field("categories", &JsonStrings(&s.categories))?;
        }
        if !s.repository.is_empty() {
            out.serialize_field("repository", s.repository.as_str())?;
        }
        if s.deprecated {
            out.serialize_field("deprecated", &true)?;
        }
        out.end()
    }
}

struct JsonReference<'a> {
    source: &'a str,
    identifier: &'a RString,
}

impl Serialize for JsonReference<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = usize::from(!self.source.is_empty()) + usize::from(!self.identifier.is_empty());
        let mut out = serializer.serialize_struct("tributary.v1.AvailablePackageReference", len)?;
        if !self.source.is_empty() {
            out.serialize_field("source", self.source)?;
        }
        if !self.identifier.is_empty() {
            out.serialize_field("identifier", self.identifier.as_str())?;
        }
        out.end()
    }
}

struct JsonStrings<'a>(&'a RVec<RString>);

impl Serialize for JsonStrings<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(RString::as_str))
    }
}

/// Converts a summary into its API form.
pub fn summary_pb(source: &str, s: Summary) -> pb::AvailablePackageSummary {
    pb::AvailablePackageSummary {
        available_package_ref: Some(pb::AvailablePackageReference {
            source: source.to_owned(),
            identifier: s.identifier.into_string(),
        }),
        name: s.name.into_string(),
        display_name: s.display_name.into_string(),
        latest_version: s.latest_version.into_string(),
        latest_app_version: s.latest_app_version.into_string(),
        short_description: s.short_description.into_string(),
        icon_url: s.icon_url.into_string(),
        categories: strings(s.categories),
        repository: s.repository.into_string(),
        deprecated: s.deprecated,
    }
}

pub(crate) fn strings(v: RVec<RString>) -> Vec<String> {
    v.into_iter().map(RString::into_string).collect()
}

/// A length-delimited field's length with its key, for a body of `len` bytes.
fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A proto3 string field's length: nothing when it is empty.
fn str_field_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        message_field_len(tag, value.len())
    }
}

fn put_str(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        put_bytes(tag, value, buf);
    }
}

/// A length-delimited field, written even when empty (an element of a repeated field).
fn put_bytes(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

/// The text fields of a summary after its reference, with their field numbers, in field order.
fn text_fields(s: &Summary) -> [(u32, &RString); 6] {
    [
        (summary::NAME, &s.name),
        (summary::DISPLAY_NAME, &s.display_name),
        (summary::LATEST_VERSION, &s.latest_version),
        (summary::LATEST_APP_VERSION, &s.latest_app_version),
        (summary::SHORT_DESCRIPTION, &s.short_description),
        (summary::ICON_URL, &s.icon_url),
    ]
}

fn reference_len(source: &str, s: &Summary) -> usize {
    str_field_len(reference::SOURCE, source) + str_field_len(reference::IDENTIFIER, &s.identifier)
}

/// The length of `AvailablePackageSummary`'s encoding (without its key and length).
fn summary_len(source: &str, s: &Summary) -> usize {
    let mut len = message_field_len(summary::REF, reference_len(source, s));
    for (tag, value) in text_fields(s) {
        len += str_field_len(tag, value);
    }
    for category in s.categories.iter() {
        len += message_field_len(summary::CATEGORIES, category.len());
    }
    len += str_field_len(summary::REPOSITORY, &s.repository);
    if s.deprecated {
        len += key_len(summary::DEPRECATED) + 1;
    }
    len
}

/// Writes `AvailablePackageSummary`'s fields, in field order, as prost writes the message that
/// [`summary_pb`] makes: the reference always (it is set), strings only when not empty, every
/// category, `deprecated` only when true. Extensions are not part of the API's summary.
fn encode_summary(source: &str, s: &Summary, buf: &mut Vec<u8>) {
    encode_key(summary::REF, WireType::LengthDelimited, buf);
    encode_varint(reference_len(source, s) as u64, buf);
    put_str(reference::SOURCE, source.as_bytes(), buf);
    put_str(reference::IDENTIFIER, s.identifier.as_bytes(), buf);
    for (tag, value) in text_fields(s) {
        put_str(tag, value.as_bytes(), buf);
    }
    for category in s.categories.iter() {
        put_bytes(summary::CATEGORIES, category.as_bytes(), buf);
    }
    put_str(summary::REPOSITORY, s.repository.as_bytes(), buf);
    if s.deprecated {
        encode_key(summary::DEPRECATED, WireType::Varint, buf);
        encode_varint(1, buf);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use tributary_plugin_api::Extension;
    use tributary_runtime::merge::token::Primary;

    use super::*;

    fn text(rng: &mut StdRng) -> String {
        const PIECES: &[&str] = &[
            "",
            "a",
            "nginx",
            "é",
            "日本語",
            "🦀",
            "\u{0}",
            "\u{7f}",
            "\u{80}",
            "-",
            " ",
            "\n",
        ];
        let n = match rng.random_range(0..10) {
            0 => 0,
            // Past one and two bytes of length varint.
            1 => rng.random_range(100..200),
            2 => rng.random_range(4000..6000),
            _ => rng.random_range(1..8),
        };
        (0..n)
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    /// 0, a one- or two-byte varint, or any.
    fn number(rng: &mut StdRng) -> u64 {
        match rng.random_range(0..3) {
            0 => 0,
            1 => rng.random_range(1..300),
            _ => rng.random(),
        }
    }

    fn summary(rng: &mut StdRng) -> Summary {
        let categories = (0..rng.random_range(0..4))
            .map(|_| RString::from(text(rng)))
            .collect::<Vec<_>>();
        let extensions = (0..rng.random_range(0..3))
            .map(|_| Extension::new(text(rng), text(rng)))
            .collect::<Vec<_>>();
        Summary {
            identifier: text(rng).into(),
            name: text(rng).into(),
            display_name: text(rng).into(),
            latest_version: text(rng).into(),
            latest_app_version: text(rng).into(),
            short_description: text(rng).into(),
            icon_url: text(rng).into(),
            categories: categories.into(),
            repository: text(rng).into(),
            deprecated: rng.random_bool(0.3),
            extensions: extensions.into(),
        }
    }

    fn failure(rng: &mut StdRng) -> pb::SourceFailure {
        pb::SourceFailure {
            source: text(rng),
            plugin: text(rng),
            kind: text(rng),
            reason: text(rng),
        }
    }

    fn page(rng: &mut StdRng) -> Page {
        let sources: Vec<Arc<str>> = (0..rng.random_range(1..4))
            .map(|_| Arc::from(text(rng)))
            .collect();
        let items = (0..rng.random_range(0..25))
            .map(|_| Item {
                source: rng.random_range(0..sources.len()),
                summary: summary(rng),
                primary: Primary::Name,
            })
            .collect();
        let count = |rng: &mut StdRng| pb::FacetCount {
            value: text(rng),
            count: number(rng),
        };
        let facets = rng.random_bool(0.5).then(|| pb::Facets {
            sources: (0..rng.random_range(0..3)).map(|_| count(rng)).collect(),
            repositories: (0..rng.random_range(0..3)).map(|_| count(rng)).collect(),
            categories: (0..rng.random_range(0..3)).map(|_| count(rng)).collect(),
            deprecated: number(rng),
            complete: rng.random_bool(0.5),
            missing_sources: (0..rng.random_range(0..2)).map(|_| failure(rng)).collect(),
        });
        Page {
            sources,
            items,
            next_page_token: text(rng),
            failed_sources: (0..rng.random_range(0..3)).map(|_| failure(rng)).collect(),
            total_size: rng.random_bool(0.5).then(|| number(rng)),
            facets,
        }
    }

    fn copy(page: &Page) -> Page {
        Page {
            sources: page.sources.clone(),
            items: page
                .items
                .iter()
                .map(|item| Item {
                    source: item.source,
                    summary: item.summary.clone(),
                    primary: Primary::Name,
                })
                .collect(),
            next_page_token: page.next_page_token.clone(),
            failed_sources: page.failed_sources.clone(),
            total_size: page.total_size,
            facets: page.facets.clone(),
        }
    }

    /// The hand-written encoding against prost's encoding of the old conversion's message: the
    /// same bytes, and they decode, as the generated type, to that message.
    fn assert_same(page: Page) {
        let bytes = page.encode();
        let message = copy(&page).into_message();
        let decoded = pb::ListAvailablePackageSummariesResponse::decode(&bytes[..])
            .expect("the page's encoding decodes");
        assert_eq!(decoded, message);
        assert_eq!(bytes, message.encode_to_vec());
        let json = serde_json::to_vec(&JsonPage(copy(&page))).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            serde_json::to_string(&message).unwrap()
        );
        let encoded = Encoded::from(page);
        assert_eq!(encoded.as_bytes(), &bytes[..]);
    }

    #[test]
    fn a_page_is_encoded_as_prost_encodes_the_converted_message() {
        let seed = std::env::var("TRIBUTARY_PAGE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        let mut rng = StdRng::seed_from_u64(seed);
        for case in 0..300 {
            let page = page(&mut rng);
            let bytes = page.encode();
            let message = copy(&page).into_message();
            assert_eq!(
                bytes,
                message.encode_to_vec(),
                "case {case} of seed {seed} (TRIBUTARY_PAGE_SEED replays it)"
            );
            assert_same(page);
        }
    }

    #[test]
    fn edge_cases_are_encoded_as_prost_encodes_them() {
        let empty = Page {
            sources: vec![Arc::from("")],
            items: Vec::new(),
            next_page_token: String::new(),
            failed_sources: Vec::new(),
            total_size: None,
            facets: None,
        };
        assert!(empty.encode().is_empty());
        assert_same(copy(&empty));
        // A count of 0 and empty facets are still sent (set fields).
        assert_same(Page {
            total_size: Some(0),
            facets: Some(pb::Facets::default()),
            ..copy(&empty)
        });
        // An item with every field empty still carries its (empty) reference.
        let blank = Page {
            items: vec![Item {
                source: 0,
                summary: Summary::default(),
                primary: Primary::Name,
            }],
            ..copy(&empty)
        };
        assert_eq!(blank.encode(), [0x0a, 2, 0x0a, 0]);
        assert_same(blank);
        // Empty categories are elements all the same; extensions are not sent; long and
        // non-ASCII text; the largest fields the contract lets through.
        let long = "ü".repeat(32 * 1024);
        let full = Summary {
            identifier: RString::from("x".repeat(1024)),
            name: RString::from("日本語🦀"),
            display_name: RString::from("\u{0}"),
            latest_version: RString::from("1.0.0"),
            latest_app_version: RString::from(""),
            short_description: RString::from(long.as_str()),
            icon_url: RString::from("https://example.com/i.png"),
            categories: vec![RString::new(), RString::from("db"), RString::new()].into(),
            repository: RString::from("r"),
            deprecated: true,
            extensions: vec![Extension::new("package.download_url", "https://x")].into(),
        };
        assert_same(Page {
            sources: vec![Arc::from("a"), Arc::from("源")],
            items: vec![
                Item {
                    source: 1,
                    summary: full.clone(),
                    primary: Primary::Name,
                },
                Item {
                    source: 0,
                    summary: Summary {
                        deprecated: false,
                        categories: RVec::new(),
                        ..full
                    },
                    primary: Primary::Relevance(3),
                },
            ],
            next_page_token: "tok".into(),
            failed_sources: vec![pb::SourceFailure::default()],
            total_size: Some(u64::MAX),
            facets: None,
        });
    }
}
