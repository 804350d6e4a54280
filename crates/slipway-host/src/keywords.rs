//! Enumerations spelled with fixed keywords (XML's `<forward mode>` and
//! `<virtualport type>`, nft's families and chains, virsh's update
//! sections…): one table per enumeration gives the type, its printing
//! (`as_str`) and its reading (`from_keyword`, and `KEYWORDS` for
//! readers that list the choices), so the two directions cannot
//! disagree. A declarative macro because the crates that do this
//! (strum) are not among the workspace's dependencies, and the table is
//! all there is to it.

/// Declares `pub enum $name` with each variant's keyword, and `KEYWORDS`,
/// `as_str` and `from_keyword` over that one table (keywords are
/// case-sensitive, as libvirt's `VIR_ENUM` tables are). Attributes given
/// before the enum (more derives, serde's renames) are kept.
#[macro_export]
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
            /// Every value with its keyword, in declaration order.
            pub const KEYWORDS: [(&'static str, $name); [$($keyword,)+].len()] =
                [$(($keyword, $name::$variant),)+];

            /// The keyword.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $keyword,)+
                }
            }

            /// The value spelled `s`, if any.
            pub fn from_keyword(s: &str) -> Option<$name> {
                Self::KEYWORDS
                    .iter()
                    .find(|(k, _)| *k == s)
                    .map(|&(_, v)| v)
            }
        }
    };
}
