//! `<metadata>`: other applications' XML, kept and printed back as libvirt
//! 9.0 does.
//!
//! Theory of operation. libvirt copies the `<metadata>` node out of the
//! document (`xmlCopyNode`), which declares on the copy every namespace
//! its content uses but inherits from outside; then it drops every child
//! that has no namespace and every later child sharing a namespace with an
//! earlier one (`virXMLNodeSanitizeNamespaces`); on output libxml2's
//! `xmlNodeDump` prints it with two-space indentation. The parser ran with
//! `xmlKeepBlanksDefault(0)`, which drops white space between elements but
//! keeps it in mixed content. This module does the same on slipway's own
//! tree: [`Metadata::from_node`] reads, [`Metadata::write`] prints. It is
//! hand-written because no XML crate reproduces libxml2's serializer
//! byte for byte (non-ASCII kept in text but written `&#xNN;` in
//! attributes, for one). The details were checked against
//! `virsh -c test:///default` (tests/corpus/metadata-*.xml).

use crate::tree::{Item, Node};

/// `<metadata>`: namespaced elements of other applications, one per namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Namespace declarations on `<metadata>` (prefix, URI), those written
    /// there and those its content inherited from `<network>`, in that order.
    pub namespaces: Vec<(String, String)>,
    /// Other attributes of `<metadata>`, as written.
    pub attrs: Vec<(String, String)>,
    /// The kept child elements, in document order.
    pub elements: Vec<XmlElement>,
}

/// One element inside `<metadata>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlElement {
    /// The qualified name as written (`app1:foo`).
    pub name: String,
    /// Namespace declarations on the element (prefix, URI); the prefix is
    /// empty for a default namespace.
    pub namespaces: Vec<(String, String)>,
    /// Attributes other than namespace declarations, in document order.
    pub attrs: Vec<(String, String)>,
    /// The content in document order.
    pub content: Vec<XmlContent>,
}

/// A piece of an element's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlContent {
    /// Character data.
    Text(String),
    /// A CDATA section.
    CData(String),
    /// A comment.
    Comment(String),
    /// A processing instruction (target, data).
    Pi(String, String),
    /// A child element.
    Element(XmlElement),
}

/// Namespace declarations of a node: (prefix, URI), "" for the default.
pub(crate) fn decls(node: &Node) -> Vec<(String, String)> {
    node.attrs
        .iter()
        .filter_map(|(k, v)| {
            if k == "xmlns" {
                Some((String::new(), v.clone()))
            } else {
                k.strip_prefix("xmlns:").map(|p| (p.to_string(), v.clone()))
            }
        })
        .collect()
}

pub(crate) fn prefix_of(qname: &str) -> Option<&str> {
    qname.split_once(':').map(|(p, _)| p)
}

/// The URI `prefix` (None: the default namespace) is bound to in `scope`
/// (innermost last).
pub(crate) fn resolve<'s>(scope: &'s [(String, String)], prefix: Option<&str>) -> Option<&'s str> {
    let p = prefix.unwrap_or("");
    scope
        .iter()
        .rev()
        .find(|(k, _)| k == p)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// What libxml2 keeps of each item that is not an element (elements are
/// always kept; their entry is `None`).
///
/// With `xmlKeepBlanksDefault(0)` libxml2 drops a text node made only of
/// white space (`areBlanks`, no DTD) unless the element is already
/// "mixed", or the text is alone before the end tag, or follows text, or
/// the element's first node is text. An element becomes mixed once its
/// parser delivers character data through the paths that check for
/// blanks: a run (between references) starting with white space, or any
/// run holding a non-ASCII character. Literal line ends are normalised
/// to `\n` first, as the XML parser does.
fn kept_items(items: &[Item]) -> Vec<Option<XmlContent>> {
    let mut out = Vec::with_capacity(items.len());
    let mut mixed = false;
    let mut first_text: Option<bool> = None;
    let mut last_text = false;
    for (i, item) in items.iter().enumerate() {
        let kept = match item {
            Item::Text(text, raw) => {
                let raw = raw.replace("\r\n", "\n").replace('\r', "\n");
                let text = quick_xml::escape::unescape(&raw)
                    .map_or_else(|_| text.clone(), |t| t.into_owned());
                if raw.chars().all(is_blank) {
                    let keep = mixed
                        || match first_text {
                            None => i + 1 == items.len(),
                            Some(first) => last_text || first,
                        };
                    if keep {
                        mixed = true;
                    }
                    keep.then_some(XmlContent::Text(raw))
                } else {
                    // The runs between references.
                    let runs = raw.split('&').enumerate().map(|(j, r)| {
                        if j == 0 {
                            r
                        } else {
                            r.split_once(';').map_or("", |(_, rest)| rest)
                        }
                    });
                    if runs
                        .clone()
                        .any(|r| r.starts_with(is_blank) || !r.is_ascii())
                    {
                        mixed = true;
                    }
                    Some(XmlContent::Text(text))
                }
            }
            Item::CData(t) => Some(XmlContent::CData(t.clone())),
            Item::Comment(t) => Some(XmlContent::Comment(t.clone())),
            Item::Pi(t, d) => Some(XmlContent::Pi(t.clone(), d.clone())),
            Item::Child(_) => None,
        };
        if kept.is_some() || matches!(item, Item::Child(_)) {
            let is_text = matches!(item, Item::Text(..));
            first_text.get_or_insert(is_text);
            last_text = is_text;
        }
        out.push(kept);
    }
    out
}

impl XmlElement {
    /// Reads `node`; `outer` is the scope of namespaces declared outside
    /// `<metadata>`, `inner` those declared from `<metadata>` down, and
    /// `hoisted` collects the outer ones the copy must declare.
    fn read(
        node: &Node,
        outer: &[(String, String)],
        inner: &mut Vec<(String, String)>,
        hoisted: &mut Vec<(String, String)>,
    ) -> XmlElement {
        let namespaces = decls(node);
        let depth = inner.len();
        inner.extend(namespaces.iter().cloned());
        let attrs: Vec<(String, String)> = node
            .attrs
            .iter()
            .filter(|(k, _)| k != "xmlns" && !k.starts_with("xmlns:"))
            .cloned()
            .collect();
        // Prefixes used here but bound only outside <metadata>.
        let used = std::iter::once(prefix_of(&node.name).map(str::to_string)).chain(
            attrs
                .iter()
                .filter_map(|(k, _)| prefix_of(k))
                .map(|p| Some(p.to_string())),
        );
        for p in used {
            let p = p.as_deref();
            // Unprefixed attributes have no namespace.
            if resolve(inner, p).is_none() {
                if let Some(uri) = resolve(outer, p) {
                    let decl = (p.unwrap_or("").to_string(), uri.to_string());
                    if !hoisted.iter().any(|(k, _)| *k == decl.0) {
                        hoisted.push(decl);
                    }
                }
            }
        }
        let mut content = Vec::new();
        for (item, kept) in node.items.iter().zip(kept_items(&node.items)) {
            match (item, kept) {
                (Item::Child(c), _) => content.push(XmlContent::Element(XmlElement::read(
                    &node.children[*c],
                    outer,
                    inner,
                    hoisted,
                ))),
                (_, Some(k)) => content.push(k),
                (_, None) => {}
            }
        }
        inner.truncate(depth);
        XmlElement {
            name: node.name.clone(),
            namespaces,
            attrs,
            content,
        }
    }

    fn write(&self, out: &mut String, level: usize, format: bool) {
        out.push('<');
        out.push_str(&self.name);
        for (p, uri) in &self.namespaces {
            write_ns(out, p, uri);
        }
        for (k, v) in &self.attrs {
            write_attr(out, k, v);
        }
        if self.content.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        let format = format
            && !self
                .content
                .iter()
                .any(|c| matches!(c, XmlContent::Text(_) | XmlContent::CData(_)));
        write_children(out, &self.content, level + 1, format);
        if format {
            indent(out, level);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level.min(60) {
        out.push_str("  ");
    }
}

fn write_children(out: &mut String, content: &[XmlContent], level: usize, format: bool) {
    if format {
        out.push('\n');
    }
    for c in content {
        if format && !matches!(c, XmlContent::Text(_) | XmlContent::CData(_)) {
            indent(out, level);
        }
        match c {
            XmlContent::Text(t) => escape_text(out, t),
            XmlContent::CData(t) => {
                out.push_str("<![CDATA[");
                out.push_str(t);
                out.push_str("]]>");
            }
            XmlContent::Comment(t) => {
                out.push_str("<!--");
                out.push_str(t);
                out.push_str("-->");
            }
            XmlContent::Pi(t, d) => {
                out.push_str("<?");
                out.push_str(t);
                if !d.is_empty() {
                    out.push(' ');
                    out.push_str(d);
                }
                out.push_str("?>");
            }
            XmlContent::Element(e) => e.write(out, level, format),
        }
        if format {
            out.push('\n');
        }
    }
}

/// libxml2's escaping of text content (UTF-8 output): markup characters
/// as entities, a carriage return as `&#13;`, everything else as is.
fn escape_text(out: &mut String, t: &str) {
    for c in t.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// libxml2's attribute serialization (no document encoding: anything
/// outside ASCII as a hexadecimal character reference).
fn write_attr(out: &mut String, k: &str, v: &str) {
    out.push(' ');
    out.push_str(k);
    out.push_str("=\"");
    for c in v.chars() {
        match c {
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if !c.is_ascii() => out.push_str(&format!("&#x{:X};", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A namespace declaration as libxml2 writes it: the URI as the parser
/// stored it (an `&` as `&#38;`, nothing else escaped), in double quotes,
/// or single ones if it holds a `"` (and `&quot;` if it holds both).
fn write_ns(out: &mut String, prefix: &str, uri: &str) {
    out.push_str(" xmlns");
    if !prefix.is_empty() {
        out.push(':');
        out.push_str(prefix);
    }
    out.push('=');
    let uri = uri.replace('&', "&#38;");
    if !uri.contains('"') {
        out.push('"');
        out.push_str(&uri);
        out.push('"');
    } else if !uri.contains('\'') {
        out.push('\'');
        out.push_str(&uri);
        out.push('\'');
    } else {
        out.push('"');
        out.push_str(&uri.replace('"', "&quot;"));
        out.push('"');
    }
}

impl Metadata {
    /// Reads `<metadata>` as libvirt keeps it; `outer` holds the namespace
    /// declarations of `<network>`.
    /// Also returns notes on the children libvirt drops (for
    /// [`crate::Network::unknown`]).
    pub(crate) fn from_node(node: &Node, outer: &[(String, String)]) -> (Metadata, Vec<String>) {
        let own = decls(node);
        let mut inner = own.clone();
        let mut hoisted = Vec::new();
        let mut elements: Vec<XmlElement> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        let mut dropped = Vec::new();
        for child in &node.children {
            let el = XmlElement::read(child, outer, &mut inner, &mut hoisted);
            // The child's namespace, in the scope it was written in.
            let mut scope: Vec<(String, String)> = outer.to_vec();
            scope.extend(own.iter().cloned());
            scope.extend(el.namespaces.iter().cloned());
            let path = format!("/network/metadata/{}", child.name);
            let Some(uri) = resolve(&scope, prefix_of(&child.name)) else {
                dropped.push(format!("{path} (dropped: no namespace, as libvirt does)"));
                continue;
            };
            if seen.iter().any(|s| s == uri) {
                dropped.push(format!(
                    "{path} (dropped: a second element in namespace {uri}, as libvirt does)"
                ));
                continue;
            }
            seen.push(uri.to_string());
            elements.push(el);
        }
        let mut namespaces = own;
        for h in hoisted {
            if !namespaces.iter().any(|(k, _)| *k == h.0) {
                namespaces.push(h);
            }
        }
        let metadata = Metadata {
            namespaces,
            attrs: node
                .attrs
                .iter()
                .filter(|(k, _)| k != "xmlns" && !k.starts_with("xmlns:"))
                .cloned()
                .collect(),
            elements,
        };
        (metadata, dropped)
    }

    /// Prints the element at indentation `level` (two spaces each), the
    /// first line without its indentation, and no final newline.
    pub(crate) fn write(&self, out: &mut String, level: usize) {
        let el = XmlElement {
            name: "metadata".to_string(),
            namespaces: self.namespaces.clone(),
            attrs: self.attrs.clone(),
            content: self
                .elements
                .iter()
                .cloned()
                .map(XmlContent::Element)
                .collect(),
        };
        el.write(out, level, true);
    }
}
