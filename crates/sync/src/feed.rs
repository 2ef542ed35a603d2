//! Reading an RSS feed of recent updates (crates.io's `rss/updates.xml`).
//!
//! Only what a mirror needs is read: per `<item>`, the crate it is about
//! (`<crates:name>`, else the crate segment of `<link>`) and an identity to
//! tell new items from ones already seen (`<guid>`, else `<link>`). The feed
//! is a hint that says which index files to ask for; the index file itself,
//! fetched with a conditional request, is the truth. So a lenient reader is
//! enough, and one that cannot be misled into more than a few requests.

/// One update in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// What identifies the item across polls.
    pub id: String,
    /// The crate the item is about, as the feed spells it.
    pub name: String,
}

/// The items of a feed, in feed order (newest first on crates.io). Items
/// without a recognisable crate name are skipped.
pub fn parse(xml: &str) -> Vec<FeedItem> {
    let mut items = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<item") {
        let after = &rest[start..];
        let Some(end) = after.find("</item>") else {
            break;
        };
        let item = &after[..end];
        rest = &after[end + "</item>".len()..];
        let link = element(item, "link");
        let name =
            element(item, "crates:name").or_else(|| link.as_deref().and_then(name_from_link));
        let id = element(item, "guid").or(link);
        if let (Some(name), Some(id)) = (name, id)
            && !name.is_empty()
        {
            items.push(FeedItem { id, name });
        }
    }
    items
}

/// The text of the first `<tag>` (attributes allowed) in `xml`, unescaped.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let mut at = 0;
    while let Some(found) = xml[at..].find(&open) {
        let start = at + found + open.len();
        // `<link` must not match `<linkage>`: the tag name ends here.
        match xml[start..].chars().next() {
            Some('>') | Some(' ') | Some('\t') | Some('\n') | Some('\r') => {}
            _ => {
                at = start;
                continue;
            }
        }
        let body_start = start + xml[start..].find('>')? + 1;
        let close = format!("</{tag}>");
        let body_end = body_start + xml[body_start..].find(&close)?;
        return Some(unescape(xml[body_start..body_end].trim()));
    }
    None
}

fn unescape(text: &str) -> String {
    let text = text
        .strip_prefix("<![CDATA[")
        .and_then(|t| t.strip_suffix("]]>"))
        .map_or_else(
            || {
                text.replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&apos;", "'")
                    .replace("&amp;", "&")
            },
            str::to_owned,
        );
    text.trim().to_owned()
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
            parse(xml),
            [
                FeedItem {
                    id: "https://crates.io/crates/serde/1.0.200".into(),
                    name: "serde".into()
                },
                FeedItem {
                    id: "https://crates.io/crates/Inflector/0.11.4".into(),
                    name: "Inflector".into()
                },
            ]
        );
    }

    #[test]
    fn junk_yields_nothing() {
        assert!(parse("<html><body>proxy error</body></html>").is_empty());
        assert!(parse("<item><link>https://x/crates/").is_empty());
        assert_eq!(
            element("<linkage>a</linkage><link>b</link>", "link").as_deref(),
            Some("b")
        );
        assert_eq!(unescape("a &amp;lt; b"), "a &lt; b");
    }
}
