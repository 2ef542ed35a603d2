//! Reading an RSS feed of recent updates (crates.io's `rss/updates.xml`).
//!
//! Only what a mirror needs is read: per `<item>`, the crate it is about
//! (`<crates:name>`, else the crate segment of `<link>`) and an identity to
//! tell new items from ones already seen (`<guid>`, else `<link>`). The feed
//! is a hint that says which index files to ask for; the index file itself,
//! fetched with a conditional request, is the truth. So a lenient reader is
//! enough, and one that cannot be misled into more than a few requests.
//!
//! The document is read with a real XML parser (`quick-xml`) rather than by
//! searching for tags: CDATA sections, comments, entities, attributes in any
//! order and namespace prefixes other than `crates:` all mean what XML says
//! they mean. A document that is not well-formed, is cut short or is not RSS
//! at all (a proxy's HTML error page) is an error, so that the poll is
//! reported as failed instead of quietly seeing no updates.

use quick_xml::NsReader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;

/// The namespace crates.io binds its own elements to (`xmlns:crates`).
const CRATES_NS: &str = "https://crates.io/";

/// One update in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// What identifies the item across polls.
    pub id: String,
    /// The crate the item is about, as the feed spells it.
    pub name: String,
    /// When the item was published (`<pubDate>`, seconds since the epoch),
    /// when the feed says and the date reads as RFC 2822.
    pub published: Option<i64>,
}

/// Why a feed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The body is not well-formed XML.
    #[error(
        "the feed is not well-formed XML (at byte {position}: {message}); check that feed_url points at an RSS feed"
    )]
    Malformed {
        /// Where in the body the parser stopped.
        position: u64,
        /// What the parser found wrong.
        message: String,
    },
    /// The body ends inside an element: a transfer cut short.
    #[error(
        "the feed ends inside <{element}> after {position} bytes (cut short?); the next poll reads it again"
    )]
    Truncated {
        /// The innermost element left open.
        element: String,
        /// The length of the body.
        position: u64,
    },
    /// The body is XML (or text) but not an RSS document.
    #[error(
        "the feed is not RSS (its root element is {root}); check that feed_url points at an RSS feed"
    )]
    NotRss {
        /// The root element found, or `none`.
        root: String,
    },
}

/// Which of an item's children is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Link,
    Guid,
    Name,
    PubDate,
}

/// What has been read of the `<item>` that is open.
#[derive(Debug, Default)]
struct OpenItem {
    /// The element depth of `<item>` itself.
    depth: usize,
    link: Option<String>,
    guid: Option<String>,
    name: Option<String>,
    pub_date: Option<String>,
    /// The child being read, and the text read of it so far.
    field: Option<(Field, String)>,
}

impl OpenItem {
    /// Keeps the text of a finished child, unless one of its kind came first
    /// or it is blank (a blank `<guid>` falls back to `<link>`).
    fn finish_field(&mut self) {
        let Some((field, text)) = self.field.take() else {
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let slot = match field {
            Field::Link => &mut self.link,
            Field::Guid => &mut self.guid,
            Field::Name => &mut self.name,
            Field::PubDate => &mut self.pub_date,
        };
        if slot.is_none() {
            *slot = Some(text.to_owned());
        }
    }

    /// The item, if it names a crate and has an identity.
    fn into_item(self) -> Option<FeedItem> {
        let name = self
            .name
            .or_else(|| self.link.as_deref().and_then(name_from_link))?;
        let id = self.guid.or(self.link)?;
        // A date that does not read is no date: the item still names a crate.
        let published = self
            .pub_date
            .and_then(|date| gix::date::parse(&date, None).ok())
            .map(|time| time.seconds);
        Some(FeedItem {
            id,
            name,
            published,
        })
    }
}

/// The items of a feed, in feed order (newest first on crates.io). Items
/// without a recognisable crate name are skipped; a body that is not a
/// whole, well-formed RSS document is an error.
pub fn parse(xml: &str) -> Result<Vec<FeedItem>, FeedError> {
    let mut reader = NsReader::from_str(xml);
    let mut items = Vec::new();
    // The names of the open elements, innermost last.
    let mut open: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut item: Option<OpenItem> = None;
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok(read) => read,
            Err(e) => {
                return Err(FeedError::Malformed {
                    position: reader.error_position(),
                    message: e.to_string(),
                });
            }
        };
        let crates_ns = matches!(ns, ResolveResult::Bound(ns) if ns.0 == CRATES_NS);
        match event {
            Event::Start(start) => {
                check_root(&mut root_seen, &start)?;
                open.push(start.name().as_ref().to_owned());
                let depth = open.len();
                match &mut item {
                    None if is_plain(&start, "item") => {
                        item = Some(OpenItem {
                            depth,
                            ..OpenItem::default()
                        });
                    }
                    Some(it) if it.field.is_none() && depth == it.depth + 1 => {
                        it.field = field(&start, crates_ns).map(|f| (f, String::new()));
                    }
                    _ => {}
                }
            }
            // `<item/>` or `<link/>` carry nothing; only a root can matter.
            Event::Empty(start) => check_root(&mut root_seen, &start)?,
            Event::End(_) => {
                let depth = open.len();
                if let Some(it) = &mut item {
                    if depth == it.depth + 1 {
                        it.finish_field();
                    } else if depth == it.depth
                        && let Some(done) = item.take().and_then(OpenItem::into_item)
                    {
                        items.push(done);
                    }
                }
                open.pop();
            }
            Event::Text(text) => push_text(&mut item, &text.xml10_content()),
            Event::CData(cdata) => push_text(&mut item, &cdata.xml10_content()),
            Event::GeneralRef(reference) => {
                let text = resolve(&reference).map_err(|message| FeedError::Malformed {
                    position: reader.buffer_position(),
                    message,
                })?;
                push_text(&mut item, &text);
            }
            Event::Eof => break,
            // Comments, processing instructions, the declaration and a
            // doctype carry nothing an item needs.
            _ => {}
        }
    }
    if let Some(element) = open.pop() {
        return Err(FeedError::Truncated {
            element,
            position: reader.buffer_position(),
        });
    }
    if !root_seen {
        return Err(FeedError::NotRss {
            root: "missing".to_owned(),
        });
    }
    Ok(items)
}

/// The first element must be `<rss>` (RSS 2.0) or `<rdf:RDF>` (RSS 1.0):
/// anything else is a page that is not a feed, like a proxy's error page.
fn check_root(root_seen: &mut bool, start: &BytesStart<'_>) -> Result<(), FeedError> {
    if *root_seen {
        return Ok(());
    }
    *root_seen = true;
    if matches!(start.local_name().as_ref(), "rss" | "RDF") {
        Ok(())
    } else {
        Err(FeedError::NotRss {
            root: format!("<{}>", start.name().as_ref()),
        })
    }
}

/// Whether `start` is `<{local}>` without a namespace prefix.
fn is_plain(start: &BytesStart<'_>, local: &str) -> bool {
    start.name().prefix().is_none() && start.local_name().as_ref() == local
}

/// Which field a child of `<item>` is. `<link>` and `<guid>` are RSS's own
/// (unprefixed: an `<atom:link>` is not the item's link); the crate name is
/// `name` in crates.io's namespace, whatever the prefix bound to it, or under
/// the `crates:` prefix of a feed that forgot to declare it.
fn field(start: &BytesStart<'_>, crates_ns: bool) -> Option<Field> {
    if is_plain(start, "link") {
        Some(Field::Link)
    } else if is_plain(start, "guid") {
        Some(Field::Guid)
    } else if is_plain(start, "pubDate") {
        Some(Field::PubDate)
    } else if start.local_name().as_ref() == "name"
        && (crates_ns
            || start
                .name()
                .prefix()
                .is_some_and(|p| p.as_ref() == "crates"))
    {
        Some(Field::Name)
    } else {
        None
    }
}

/// Adds text to the field being read, if any.
fn push_text(item: &mut Option<OpenItem>, text: &str) {
    if let Some(OpenItem {
        field: Some((_, buf)),
        ..
    }) = item
    {
        buf.push_str(text);
    }
}

/// The text of `&name;`: a character reference or one of XML's five
/// entities. An entity XML does not define (an HTML `&nbsp;`) is kept as
/// written, since a feed has no DTD that could define it.
fn resolve(reference: &BytesRef<'_>) -> Result<String, String> {
    if let Some(ch) = reference.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(ch.to_string());
    }
    let text = match &**reference {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "quot" => "\"",
        "apos" => "'",
        other => return Ok(format!("&{other};")),
    };
    Ok(text.to_owned())
}

/// `https://crates.io/crates/serde/1.0.200` → `serde`.
fn name_from_link(link: &str) -> Option<String> {
    let (_, rest) = link.split_once("/crates/")?;
    let name = rest.split(['/', '?', '#']).next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, name: &str) -> FeedItem {
        FeedItem {
            id: id.into(),
            name: name.into(),
            published: None,
        }
    }

    /// An RSS 2.0 document around `items`, with crates.io's namespace.
    fn rss(items: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:crates="https://crates.io/"><channel><title>t</title>{items}</channel></rss>"#
        )
    }

    #[test]
    fn reads_crates_io_items() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:crates="https://crates.io/">
  <channel>
    <title>crates.io: recent updates</title>
    <link>https://crates.io/</link>
    <item>
      <title>New crate version published: serde v1.0.200</title>
      <link>https://crates.io/crates/serde/1.0.200</link>
      <description><![CDATA[A generic serialization framework & more]]></description>
      <guid isPermaLink="true">https://crates.io/crates/serde/1.0.200</guid>
      <pubDate>Sat, 22 Jun 2024 15:57:19 +0000</pubDate>
      <crates:name>serde</crates:name>
      <crates:version>1.0.200</crates:version>
    </item>
    <item>
      <title>New crate version published: Inflector v0.11.4</title>
      <link>https://crates.io/crates/Inflector/0.11.4</link>
    </item>
    <item><title>no crate here</title></item>
  </channel>
</rss>"#;
        assert_eq!(
            parse(xml).unwrap(),
            [
                FeedItem {
                    // Sat, 22 Jun 2024 15:57:19 +0000
                    published: Some(1_719_071_839),
                    ..item("https://crates.io/crates/serde/1.0.200", "serde")
                },
                item("https://crates.io/crates/Inflector/0.11.4", "Inflector"),
            ]
        );
    }

    #[test]
    fn cdata_text_is_read_as_text() {
        let xml = rss(r#"<item>
              <title><![CDATA[New: <serde> & </item> v1]]></title>
              <link><![CDATA[https://crates.io/crates/serde/1.0.0]]></link>
              <crates:name> <![CDATA[ser]]>de </crates:name>
            </item>"#);
        assert_eq!(
            parse(&xml).unwrap(),
            [item("https://crates.io/crates/serde/1.0.0", "serde")]
        );
    }

    #[test]
    fn comments_hide_what_they_contain() {
        let xml = rss(
            r#"<!-- <item><link>https://crates.io/crates/ghost/1.0.0</link></item> -->
            <item>
              <link>https://crates.io/crates/<!-- ignored -->rand/0.8.5</link>
              <!-- </item> <crates:name>wrong</crates:name> -->
              <guid>rand-0.8.5</guid>
            </item>"#,
        );
        assert_eq!(parse(&xml).unwrap(), [item("rand-0.8.5", "rand")]);
    }

    #[test]
    fn attributes_in_any_order_and_with_markup_in_values() {
        let xml = rss(r#"<item data-x="a>b" id='1'>
              <guid data-note="<link>" isPermaLink="false">g1</guid>
              <crates:name
                 lang="en"   >tokio</crates:name>
              <link rel="alternate" href="https://crates.io/crates/wrong/1">https://crates.io/crates/tokio/1.0.0</link>
            </item>
            <item><guid isPermaLink="false" data-x="1">g2</guid><crates:name>log</crates:name></item>"#);
        assert_eq!(
            parse(&xml).unwrap(),
            [item("g1", "tokio"), item("g2", "log")]
        );
    }

    #[test]
    fn entities_and_character_references_are_resolved() {
        let xml = rss(r#"<item>
              <guid>a &amp;lt; b &#38; &#x2D; &apos;&quot;&gt;</guid>
              <crates:name>serde&#95;json</crates:name>
            </item>
            <item><guid>x&nbsp;y</guid><crates:name>log</crates:name></item>"#);
        assert_eq!(
            parse(&xml).unwrap(),
            [
                item("a &lt; b & - '\">", "serde_json"),
                item("x&nbsp;y", "log"),
            ]
        );
    }

    /// A feed's own DTD is never used: its entities stay as written, so a
    /// hostile feed cannot expand a few bytes into gigabytes (or read files).
    #[test]
    fn doctype_entities_are_not_expanded() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY f SYSTEM "file:///etc/passwd">]>
<rss><channel><item><guid>&b;&f;</guid><link>https://crates.io/crates/x/1</link></item></channel></rss>"#;
        assert_eq!(parse(xml).unwrap(), [item("&b;&f;", "x")]);
    }

    #[test]
    fn namespaces_are_resolved_not_matched_by_prefix() {
        let xml = r#"<rss version="2.0" xmlns:c="https://crates.io/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom"><channel>
            <item>
              <dc:name>not-this</dc:name>
              <atom:link href="https://crates.io/crates/atom/1" rel="self"/>
              <atom:link>https://crates.io/crates/atom/1</atom:link>
              <c:name>anyhow</c:name>
              <guid>anyhow-1.0.0</guid>
            </item>
            <item>
              <dc:name>not-this-either</dc:name>
              <link>https://crates.io/crates/thiserror/2.0.0</link>
            </item>
            </channel></rss>"#;
        assert_eq!(
            parse(xml).unwrap(),
            [
                item("anyhow-1.0.0", "anyhow"),
                item("https://crates.io/crates/thiserror/2.0.0", "thiserror"),
            ]
        );
    }

    #[test]
    fn rss_1_rdf_feeds_are_read() {
        let xml = r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
            <item rdf:about="x"><link>https://crates.io/crates/bytes/1.0.0</link></item>
            </rdf:RDF>"#;
        assert_eq!(
            parse(xml).unwrap(),
            [item("https://crates.io/crates/bytes/1.0.0", "bytes")]
        );
    }

    #[test]
    fn only_item_and_its_own_children_count() {
        let xml = rss(
            r#"<items><link>https://crates.io/crates/nope/1</link></items>
            <item>
              <linkage>https://crates.io/crates/nope/1</linkage>
              <source><link>https://crates.io/crates/nested/1</link></source>
              <link>https://crates.io/crates/yes/1</link>
              <guid></guid>
            </item>"#,
        );
        assert_eq!(
            parse(&xml).unwrap(),
            [item("https://crates.io/crates/yes/1", "yes")]
        );
    }

    #[test]
    fn a_truncated_feed_is_an_error() {
        let whole = rss(
            r#"<item><link>https://crates.io/crates/serde/1.0.0</link></item>
            <item><link>https://crates.io/crates/rand/0.8.5</link></item>"#,
        );
        assert_eq!(parse(&whole).unwrap().len(), 2);
        let cut = &whole[..whole.find("rand").unwrap()];
        let err = parse(cut).unwrap_err();
        assert!(matches!(err, FeedError::Truncated { .. }), "{err:?}");
        assert!(err.to_string().contains("cut short"), "{err}");
        // Cut inside a tag, every prefix is an error and none panics.
        for end in (0..whole.len()).filter(|&end| whole.is_char_boundary(end)) {
            assert!(parse(&whole[..end]).is_err(), "prefix of {end} bytes");
        }
    }

    #[test]
    fn junk_is_an_error() {
        let err = parse("<html><body>proxy error</body></html>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the feed is not RSS (its root element is <html>); check that feed_url points at an RSS feed"
        );
        assert!(matches!(
            parse("proxy error").unwrap_err(),
            FeedError::NotRss { .. }
        ));
        assert!(parse("").is_err());
        assert!(parse("<item><link>https://x/crates/").is_err());
        let err = parse("<rss><channel><item></link></item></channel></rss>").unwrap_err();
        assert!(matches!(err, FeedError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("the feed is not well-formed XML (at byte "),
            "{err}"
        );
        assert!(parse("<rss>\u{0}\u{1}<<>>&#0;</rss>").is_err());
    }
}

/// Property tests: generated feeds read back exactly, and damaged or random
/// bodies are refused or read, never a panic. `PROPTEST_CASES=N` raises the
/// count for a longer local run.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    fn config(cases: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Text as XML character data.
    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// How one item spells its fields.
    #[derive(Debug, Clone)]
    struct GenItem {
        name: String,
        vers: String,
        /// `<guid>` text, if any.
        guid: Option<String>,
        /// Whether `<crates:name>` is there (else the name comes from `<link>`).
        with_name: bool,
        /// 0: plain text, 1: CDATA, 2: character references.
        style: u8,
        title: String,
        comment: Option<String>,
        attributes_first: bool,
    }

    impl GenItem {
        fn spell(&self, text: &str) -> String {
            match self.style {
                0 => escape(text),
                1 => format!("<![CDATA[{text}]]>"),
                _ => text.chars().map(|c| format!("&#{};", c as u32)).collect(),
            }
        }

        fn xml(&self) -> String {
            let link = format!("https://crates.io/crates/{}/{}", self.name, self.vers);
            let mut out = String::from("<item>");
            if let Some(comment) = &self.comment {
                out.push_str(&format!("<!--{comment}-->"));
            }
            out.push_str(&format!("<title>{}</title>", escape(&self.title)));
            out.push_str(&format!("<link>{}</link>", self.spell(&link)));
            if let Some(guid) = &self.guid {
                let attrs = if self.attributes_first {
                    r#" isPermaLink="false" data-x="a&gt;b""#
                } else {
                    r#" data-x='"' isPermaLink="false""#
                };
                out.push_str(&format!("<guid{attrs}>{}</guid>", self.spell(guid)));
            }
            if self.with_name {
                out.push_str(&format!(
                    "<crates:name>{}</crates:name>",
                    self.spell(&self.name)
                ));
            }
            out.push_str("</item>\n");
            out
        }

        fn expected(&self) -> FeedItem {
            let link = format!("https://crates.io/crates/{}/{}", self.name, self.vers);
            FeedItem {
                id: self.guid.clone().unwrap_or(link),
                name: self.name.clone(),
                published: None,
            }
        }
    }

    fn gen_item() -> impl Strategy<Value = GenItem> {
        (
            "[a-zA-Z][a-zA-Z0-9_-]{0,20}",
            "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}",
            // Anything printable but `]`, which could close a CDATA section.
            proptest::option::of("[!-\\\\^-~][ -\\\\^-~]{0,30}[!-\\\\^-~]"),
            any::<bool>(),
            0u8..3,
            "\\PC{0,30}",
            proptest::option::of("[a-z <>&]{0,20}"),
            any::<bool>(),
        )
            .prop_map(
                |(name, vers, guid, with_name, style, title, comment, attributes_first)| GenItem {
                    name,
                    vers,
                    guid,
                    with_name,
                    style,
                    title,
                    comment,
                    attributes_first,
                },
            )
    }

    fn feed(items: &[GenItem]) -> String {
        let body: String = items.iter().map(GenItem::xml).collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\" xmlns:crates=\"https://crates.io/\"><channel><title>t</title>\n{body}</channel></rss>"
        )
    }

    proptest! {
        #![proptest_config(config(256))]

        /// A generated feed reads back as exactly its items, whatever the
        /// spelling of their text.
        #[test]
        fn generated_feeds_read_back_exactly(items in prop::collection::vec(gen_item(), 0..8)) {
            let xml = feed(&items);
            let expected: Vec<FeedItem> = items.iter().map(GenItem::expected).collect();
            prop_assert_eq!(parse(&xml).map_err(|e| e.to_string()), Ok(expected));
        }

        /// Every cut of a feed short of its end is an error, never a panic
        /// nor a partial list of items.
        #[test]
        fn truncated_feeds_are_errors(
            items in prop::collection::vec(gen_item(), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let xml = feed(&items);
            let mut end = cut.index(xml.len());
            while !xml.is_char_boundary(end) {
                end -= 1;
            }
            prop_assert!(parse(&xml[..end]).is_err());
        }

        /// A feed with characters replaced, removed or inserted, and noise,
        /// are read or refused without a panic.
        #[test]
        fn damaged_feeds_and_noise_never_panic(
            items in prop::collection::vec(gen_item(), 1..4),
            edits in prop::collection::vec((any::<prop::sample::Index>(), prop_oneof![
                prop::sample::select(vec!['<', '>', '&', '/', '"', '\'', ';', '#', '!', '[', ']', ':', '-', '?', '=']),
                any::<char>(),
            ], 0..3u8), 1..6),
            noise in "\\PC{0,200}",
        ) {
            let mut chars: Vec<char> = feed(&items).chars().collect();
            for (at, c, how) in edits {
                let at = at.index(chars.len());
                match how {
                    0 => chars[at] = c,
                    1 => {
                        chars.remove(at);
                    }
                    _ => chars.insert(at, c),
                }
            }
            let damaged: String = chars.into_iter().collect();
            let _ = parse(&damaged);
            let _ = parse(&noise);
            let _ = parse(&format!("<rss>{noise}</rss>"));
        }
    }
}
