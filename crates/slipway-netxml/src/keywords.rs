//! Enumerations that XML spells with fixed keywords (`<forward mode>`,
//! `<lease unit>`, `<virtualport type>`…): one table per enumeration
//! gives the type, its printing (`as_str`) and its reading
//! (`from_xml`, and `KEYWORDS` for the tree reader's `choice`), so the
//! two directions cannot disagree. A declarative macro because the
//! crates that do this (strum) are not among the workspace's
//! dependencies, and the table is all there is to it.

/// Declares `pub enum $name` with each variant's keyword, and `KEYWORDS`,
/// `as_str` and `from_xml` over that one table (keywords are
/// case-sensitive, as libvirt's `VIR_ENUM` tables are).
macro_rules! keywords {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $keyword:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value with its XML spelling, in declaration order.
            pub const KEYWORDS: &'static [(&'static str, $name)] =
                &[$(($keyword, $name::$variant),)+];

            /// The XML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $keyword,)+
                }
            }

            /// The value spelled `s`, if any.
            pub fn from_xml(s: &str) -> Option<$name> {
                Self::KEYWORDS
                    .iter()
                    .find(|(k, _)| *k == s)
                    .map(|&(_, v)| v)
            }
        }
    };
}

pub(crate) use keywords;
