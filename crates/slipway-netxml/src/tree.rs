//! The element tree every document is read into, and the reading of it.
//!
//! quick-xml events become a small tree of [`Node`]s that keeps byte
//! offsets, so every error can name a line. A [`TreeReader`] then reads a
//! tree into a model: typed attributes, with errors in the reader's own
//! terms ([`Report`]), and the paths of everything it did not ask about
//! ([`TreeReader::unknown`]). The network parser (`parse`), the network
//! port parser (`netport`) and the interface parser (`interface`) are all
//! such readers; the first two report errors through [`Located`], and the
//! port settings they share are read by `netdev`. [`esc`], the escaping of
//! text printed back into XML, and [`XmlWriter`], libvirt's layout of
//! printed XML, live here too, below every printer.

use std::fmt::{Display, Write as _};
use std::str::FromStr;

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::XmlError;

/// One element of the document.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) children: Vec<Node>,
    /// Concatenated character data directly inside this element.
    pub(crate) text: String,
    /// The XPath string-value: all character data inside the element,
    /// descendants included, in document order. libvirt reads `<name>`,
    /// `<uuid>` and `<hostname>` this way.
    pub(crate) string_value: String,
    /// Byte offset of the `<` that opens the element.
    pub(crate) offset: usize,
    /// The content in document order (text, comments, child elements by
    /// index into `children`): what `<metadata>` keeps verbatim.
    pub(crate) items: Vec<Item>,
}

/// One piece of an element's content, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// Character data: with references resolved, and as written.
    Text(String, String),
    /// A CDATA section's content.
    CData(String),
    /// A comment's content.
    Comment(String),
    /// A processing instruction: target and the rest.
    Pi(String, String),
    /// The child element `children[i]`.
    Child(usize),
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn syntax(src: &str, offset: usize, message: impl Into<String>) -> XmlError {
    let (line, column) = line_col(src, offset);
    XmlError::Syntax {
        line,
        column,
        message: message.into(),
    }
}

/// True for an XML Name (ASCII rules; any non-ASCII character is accepted
/// as a name character, which is what XML allows for letters).
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == ':' || !first.is_ascii())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c) || !c.is_ascii())
}

/// Checks what quick-xml lets through but XML (and so libvirt's libxml2)
/// forbids inside a tag: `<` in attribute values and attributes not
/// separated by white space. `raw` is the tag without `<`, `>` and `/`.
fn check_tag(src: &str, offset: usize, raw: &[u8]) -> Result<(), XmlError> {
    let mut quote: Option<u8> = None;
    for (i, &c) in raw.iter().enumerate() {
        let at = offset + 1 + i;
        match quote {
            Some(q) if c == q => {
                quote = None;
                if raw.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                    return Err(syntax(
                        src,
                        at + 1,
                        "attributes must be separated by white space",
                    ));
                }
            }
            Some(_) if c == b'<' => {
                return Err(syntax(src, at, "'<' is not allowed in an attribute value"));
            }
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None => {}
        }
    }
    Ok(())
}

fn start_node(src: &str, e: &BytesStart<'_>, offset: usize) -> Result<Node, XmlError> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    if !is_name(&name) {
        return Err(syntax(
            src,
            offset + 1,
            format!("'{name}' is not a valid element name"),
        ));
    }
    check_tag(src, offset, e)?;
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| {
            // Attribute errors count from the byte after '<'.
            let rel = match err {
                AttrError::ExpectedEq(p)
                | AttrError::ExpectedValue(p)
                | AttrError::UnquotedValue(p)
                | AttrError::ExpectedQuote(p, _)
                | AttrError::Duplicated(p, _) => p,
            };
            syntax(src, offset + 1 + rel, format!("in <{name}>: {err}"))
        })?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        if !is_name(&key) {
            return Err(syntax(
                src,
                offset,
                format!("in <{name}>: '{key}' is not a valid attribute name"),
            ));
        }
        // XML attribute-value normalisation (as libxml2 does for libvirt):
        // literal tabs and line breaks read as spaces; character
        // references are kept.
        let raw: Vec<u8> = a
            .value
            .iter()
            .map(|&c| {
                if matches!(c, b'\t' | b'\n' | b'\r') {
                    b' '
                } else {
                    c
                }
            })
            .collect();
        let raw = String::from_utf8_lossy(&raw);
        let value = quick_xml::escape::unescape(&raw)
            .map_err(|err| syntax(src, offset, format!("in <{name} {key}>: {err}")))?
            .into_owned();
        check_chars(src, offset, &value)?;
        attrs.push((key, value));
    }
    Ok(Node {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
        string_value: String::new(),
        offset,
        items: Vec::new(),
    })
}

/// XML 1.0's `Char` production: no control characters other than tab and
/// line breaks, no U+FFFE/U+FFFF.
fn is_xml_char(c: char) -> bool {
    !((c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}'))
}

/// Refuses characters XML 1.0 does not allow (control characters other than
/// tab and line breaks, including ones written as character references),
/// as libxml2 does.
fn check_chars(src: &str, offset: usize, text: &str) -> Result<(), XmlError> {
    match text.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(syntax(
            src,
            offset,
            format!("character U+{:04X} is not allowed in XML", c as u32),
        )),
        None => Ok(()),
    }
}

/// Appends `node` to `parent`'s children, recording its place in the content.
fn adopt(parent: &mut Node, node: Node) {
    parent.items.push(Item::Child(parent.children.len()));
    parent.children.push(node);
}

/// Reads the whole document into a tree rooted at its single top element.
pub(crate) fn read_tree(src: &str) -> Result<Node, XmlError> {
    let mut roots = read_nodes(src, false)?;
    // read_nodes returns exactly one root when `many` is false.
    Ok(roots.remove(0))
}

/// Reads a document that may hold several top-level elements (a file of
/// bare `<interface>` elements), in document order.
pub(crate) fn read_forest(src: &str) -> Result<Vec<Node>, XmlError> {
    read_nodes(src, true)
}

/// Reads the top-level elements of `src`: exactly one unless `many`.
fn read_nodes(src: &str, many: bool) -> Result<Vec<Node>, XmlError> {
    // Characters XML forbids anywhere, written literally (comments
    // included); references to them are caught after unescaping.
    if let Some((at, c)) = src.char_indices().find(|&(_, c)| !is_xml_char(c)) {
        return Err(syntax(
            src,
            at,
            format!("character U+{:04X} is not allowed in XML", c as u32),
        ));
    }
    let mut reader = Reader::from_str(src);
    let mut stack: Vec<Node> = Vec::new();
    let mut roots: Vec<Node> = Vec::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let ev = reader.read_event().map_err(|err| {
            let at = usize::try_from(reader.error_position()).unwrap_or(before);
            syntax(src, at, err.to_string())
        })?;
        match ev {
            Event::Start(e) => {
                if !many && !roots.is_empty() && stack.is_empty() {
                    return Err(syntax(src, before, "content after the root element"));
                }
                stack.push(start_node(src, &e, before)?);
            }
            Event::Empty(e) => {
                let node = start_node(src, &e, before)?;
                match stack.last_mut() {
                    Some(parent) => adopt(parent, node),
                    None if many || roots.is_empty() => roots.push(node),
                    None => return Err(syntax(src, before, "content after the root element")),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end tags match their start tags.
                let node = stack
                    .pop()
                    .ok_or_else(|| syntax(src, before, "end tag without a start tag"))?;
                match stack.last_mut() {
                    Some(parent) => adopt(parent, node),
                    None => roots.push(node),
                }
            }
            Event::Text(t) => {
                if t.windows(3).any(|w| w == b"]]>") {
                    return Err(syntax(
                        src,
                        before,
                        "']]>' is not allowed in character data",
                    ));
                }
                let raw = String::from_utf8_lossy(&t).into_owned();
                let text = t
                    .unescape()
                    .map_err(|err| syntax(src, before, err.to_string()))?;
                check_chars(src, before, &text)?;
                for open in &mut stack {
                    open.string_value.push_str(&text);
                }
                match stack.last_mut() {
                    Some(parent) => {
                        parent.text.push_str(&text);
                        parent.items.push(Item::Text(text.into_owned(), raw));
                    }
                    None if text.trim().is_empty() => {}
                    None => return Err(syntax(src, before, "text outside the root element")),
                }
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t).into_owned();
                check_chars(src, before, &text)?;
                for open in &mut stack {
                    open.string_value.push_str(&text);
                }
                match stack.last_mut() {
                    Some(parent) => {
                        parent.text.push_str(&text);
                        parent.items.push(Item::CData(text));
                    }
                    None => return Err(syntax(src, before, "CDATA outside the root element")),
                }
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(syntax(
                        src,
                        src.len(),
                        format!("unexpected end of document: <{}> is not closed", open.name),
                    ));
                }
                if roots.is_empty() {
                    return Err(syntax(src, src.len(), "no root element"));
                }
                return Ok(roots);
            }
            Event::Decl(d) => {
                let version = d
                    .version()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                if !version.starts_with("1.") {
                    return Err(syntax(
                        src,
                        before,
                        format!("unsupported XML version '{version}'"),
                    ));
                }
                // Only at the very start (a byte order mark may precede it).
                if !src
                    .get(..before)
                    .unwrap_or("")
                    .trim_start_matches('\u{feff}')
                    .is_empty()
                {
                    return Err(syntax(
                        src,
                        before,
                        "XML declaration allowed only at the start of the document",
                    ));
                }
            }
            Event::DocType(_) => {
                if !roots.is_empty() || !stack.is_empty() {
                    return Err(syntax(
                        src,
                        before,
                        "DOCTYPE allowed only before the root element",
                    ));
                }
            }
            Event::Comment(c) => {
                if c.windows(2).any(|w| w == b"--") || c.last() == Some(&b'-') {
                    return Err(syntax(src, before, "'--' is not allowed inside a comment"));
                }
                if let Some(parent) = stack.last_mut() {
                    parent
                        .items
                        .push(Item::Comment(String::from_utf8_lossy(&c).into_owned()));
                }
            }
            Event::PI(pi) => {
                let target = String::from_utf8_lossy(pi.target()).into_owned();
                if !is_name(&target) || target.eq_ignore_ascii_case("xml") {
                    return Err(syntax(
                        src,
                        before,
                        format!("'{target}' is not a valid processing instruction target"),
                    ));
                }
                if let Some(parent) = stack.last_mut() {
                    let rest = String::from_utf8_lossy(pi.content())
                        .trim_start()
                        .to_string();
                    parent.items.push(Item::Pi(target, rest));
                }
            }
        }
    }
}

impl Node {
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn kids<'n>(&'n self, name: &'n str) -> impl Iterator<Item = &'n Node> + 'n {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child of that name: the one libvirt reads when it is
    /// repeated (except for the few of which libvirt keeps the last, read
    /// with [`Node::kids`]).
    pub(crate) fn kid(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// How a reader of the tree reports a bad attribute, in its own error type.
pub(crate) trait Report {
    /// The reader's error.
    type Error;
    /// Attribute `name` of `node` (at `path`) is `value`, which is not `expected`.
    fn bad_value(
        &self,
        node: &Node,
        path: &str,
        name: &str,
        value: &str,
        expected: &str,
    ) -> Self::Error;
    /// `node` (at `path`) has no attribute `name`, which it needs.
    fn missing(&self, node: &Node, path: &str, name: &str) -> Self::Error;
}

/// Reads a tree into a model: attributes parsed, errors made by `R`, and
/// what was not asked about collected in `unknown`.
pub(crate) struct TreeReader<R> {
    /// Makes the errors.
    pub(crate) report: R,
    /// Paths of the attributes and elements the model does not know.
    pub(crate) unknown: Vec<String>,
}

impl<R: Report> TreeReader<R> {
    /// A reader with nothing unknown yet.
    pub(crate) fn new(report: R) -> TreeReader<R> {
        TreeReader {
            report,
            unknown: Vec::new(),
        }
    }

    /// The attributes of `node` that are not in `known`.
    pub(crate) fn unknown_attrs<'n>(
        node: &'n Node,
        known: &'n [&str],
    ) -> impl Iterator<Item = &'n str> + 'n {
        node.attrs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(move |k| !known.contains(k))
    }

    /// Records attributes and child elements of `node` outside the known
    /// lists as `path/@attr` and `path/child`.
    pub(crate) fn check(&mut self, node: &Node, path: &str, attrs: &[&str], children: &[&str]) {
        for k in Self::unknown_attrs(node, attrs) {
            self.unknown.push(format!("{path}/@{k}"));
        }
        for c in &node.children {
            if !children.contains(&c.name.as_str()) {
                self.unknown.push(format!("{path}/{}", c.name));
            }
        }
    }

    /// The first child `name` of `node` (the one libvirt reads) as `read`
    /// makes it; `None` without one.
    pub(crate) fn kid_with<T>(
        &mut self,
        node: &Node,
        name: &str,
        read: impl FnOnce(&mut Self, &Node) -> Result<Option<T>, R::Error>,
    ) -> Result<Option<T>, R::Error> {
        node.kid(name).map_or(Ok(None), |n| read(self, n))
    }

    /// Attribute `name` parsed with `FromStr`; a value that does not parse
    /// is an error naming `expected`.
    pub(crate) fn parsed<T: FromStr>(
        &self,
        node: &Node,
        path: &str,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, R::Error> {
        match node.attr(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|_| self.report.bad_value(node, path, name, v, expected)),
        }
    }

    /// Attribute `name`, which must be there.
    pub(crate) fn required<'n>(
        &self,
        node: &'n Node,
        path: &str,
        name: &str,
    ) -> Result<&'n str, R::Error> {
        node.attr(name)
            .ok_or_else(|| self.report.missing(node, path, name))
    }

    /// Attribute `name` as one of `choices` (value, result): anything else
    /// is an error naming `expected`.
    pub(crate) fn choice<T: Copy>(
        &self,
        node: &Node,
        path: &str,
        name: &str,
        choices: &[(&str, T)],
        expected: &str,
    ) -> Result<Option<T>, R::Error> {
        match node.attr(name) {
            None => Ok(None),
            Some(v) => match choices.iter().find(|(c, _)| *c == v) {
                Some((_, t)) => Ok(Some(*t)),
                None => Err(self.report.bad_value(node, path, name, v, expected)),
            },
        }
    }

    /// `yes`/`no` (libvirt's tristate booleans).
    pub(crate) fn yes_no(
        &self,
        node: &Node,
        path: &str,
        name: &str,
    ) -> Result<Option<bool>, R::Error> {
        self.choice(
            node,
            path,
            name,
            &[("yes", true), ("no", false)],
            "'yes' or 'no'",
        )
    }
}

/// An unsigned number as C's `strtoul(…, 0)` reads it and libvirt accepts
/// it (`virStrToLong_ui` with base 0): `0x` hexadecimal, leading-`0`
/// octal, else decimal; `None` when it is not one or exceeds 32 bits.
pub(crate) fn c_uint(v: &str) -> Option<u32> {
    let parsed = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else if v.len() > 1 && v.starts_with('0') {
        u32::from_str_radix(&v[1..], 8)
    } else {
        v.parse::<u32>()
    };
    parsed.ok()
}

/// Where a document's errors are: line and column in `src` (the network
/// and the network port parsers).
pub(crate) struct Located<'a> {
    pub(crate) src: &'a str,
}

impl Located<'_> {
    fn pos(&self, node: &Node) -> (usize, usize) {
        line_col(self.src, node.offset)
    }

    /// A value error at `path` (an attribute's or an element's).
    pub(crate) fn value_err(
        &self,
        node: &Node,
        path: &str,
        value: &str,
        expected: &str,
    ) -> XmlError {
        let (line, column) = self.pos(node);
        XmlError::Value {
            line,
            column,
            path: path.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// A structure error (something missing or misplaced) at `path`.
    pub(crate) fn structure(
        &self,
        node: &Node,
        path: &str,
        message: impl Into<String>,
    ) -> XmlError {
        let (line, column) = self.pos(node);
        XmlError::Structure {
            line,
            column,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl Report for Located<'_> {
    type Error = XmlError;

    fn bad_value(
        &self,
        node: &Node,
        path: &str,
        name: &str,
        value: &str,
        expected: &str,
    ) -> XmlError {
        self.value_err(node, &format!("{path}/@{name}"), value, expected)
    }

    fn missing(&self, node: &Node, path: &str, name: &str) -> XmlError {
        self.structure(node, path, format!("missing required attribute '{name}'"))
    }
}

/// Escapes an attribute value like libvirt's `virBufferEscapeString`:
/// the five XML specials become entities and control characters other
/// than tab, newline and carriage return are dropped. Unlike libvirt,
/// those three are written as character references: a parser normalises
/// them to spaces when they stand raw in an attribute, so libvirt's own
/// output of a name holding a newline does not read back as that name.
pub(crate) fn esc(s: &str) -> String {
    escape(s, true)
}

/// Escapes text content: as [`esc`], but tab, newline and carriage
/// return stay as they are (text keeps them).
fn esc_text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' if attribute => {
                let _ = write!(out, "&#{};", c as u32);
            }
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// libvirt's spelling of a tristate that is set.
pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A start tag being built: `<name`, then its attributes in order.
pub(crate) struct Tag(String);

impl Tag {
    /// `<name` without attributes yet.
    pub(crate) fn new(name: &str) -> Tag {
        Tag(format!("<{name}"))
    }

    /// Adds ` name='value'`; `value` is printed as it is (callers escape
    /// strings with [`esc`]).
    pub(crate) fn attr(mut self, name: &str, value: impl Display) -> Tag {
        let _ = write!(self.0, " {name}='{value}'");
        self
    }

    /// Adds the attribute when there is a value.
    pub(crate) fn opt(self, name: &str, value: Option<impl Display>) -> Tag {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }
}

/// Printed XML in libvirt's layout (`virBuffer` with its automatic
/// indentation): one element a line, two more spaces a level.
#[derive(Default)]
pub(crate) struct XmlWriter {
    /// The document so far.
    pub(crate) out: String,
    /// Spaces before the next line.
    pub(crate) indent: usize,
}

impl XmlWriter {
    /// Appends one line at the current indentation.
    pub(crate) fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Writes `tag` as an element without content: `<name …/>`.
    pub(crate) fn empty(&mut self, tag: Tag) {
        self.line(&format!("{}/>", tag.0));
    }

    /// Writes `tag` as a start tag `<name …>` and indents its content.
    pub(crate) fn start(&mut self, tag: Tag) {
        self.line(&format!("{}>", tag.0));
        self.indent += 2;
    }

    /// Ends the element `name` that [`XmlWriter::start`] began.
    pub(crate) fn end(&mut self, name: &str) {
        self.indent -= 2;
        self.line(&format!("</{name}>"));
    }

    /// `<name>text</name>`, the text escaped.
    pub(crate) fn text(&mut self, name: &str, text: &str) {
        self.line(&format!("<{name}>{}</{name}>", esc_text(text)));
    }
}
