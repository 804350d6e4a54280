//! libvirt network XML: a typed model, validation, and formatting identical to libvirt's.
//!
//! Formatting follows libvirt 9.0 byte for byte (checked against `virsh -c
//! test:///default` by the tests); parsing follows libvirt's reading rules,
//! but reports what libvirt would silently drop in [`Network::unknown`].
//!
//! ```
//! use slipway_netxml::Network;
//! let net = Network::from_xml("<network><name>n</name></network>").unwrap();
//! assert_eq!(net.name, "n");
//! ```

#![deny(missing_docs)]

mod defaults;
mod error;
mod format;
mod ifname;
pub mod interface;
mod mac;
pub mod merge;
mod metadata;
mod model;
mod netdev;
pub mod netport;
mod ovn;
mod parse;
mod tree;
mod validate;

pub use defaults::DefaultsContext;
pub use error::{ValidationError, XmlError};
pub use ifname::{IfName, IfNameError};
pub use interface::{domain_uuid, parse_interfaces, Interface, InterfaceError, InterfaceKind};
pub use mac::{generate_mac, generate_uuid, MacAddr, MacParseError};
pub use metadata::{Metadata, XmlContent, XmlElement};
pub use model::*;
pub use netdev::{
    Bandwidth, BandwidthRate, NativeVlanMode, VirtualPort, VirtualPortType, Vlan, PROFILE_ID_MAX,
    VLAN_ID_MAX,
};
pub use netport::NetworkPort;
pub use ovn::{
    OvnAddress, OvnRemote, OvnSwitch, OVN_ADDRESSES_MAX, OVN_NS, OVN_REMOTES_MAX,
    OVN_SWITCH_NAME_MAX, OVN_UNIX_PATH_MAX,
};

impl Network {
    /// Parses a `<network>` document. Elements and attributes the model does
    /// not know are recorded in [`Network::unknown`] (libvirt drops them).
    /// Malformed XML and values that do not parse (addresses, numbers,
    /// enumerations) are errors carrying the line and column.
    pub fn from_xml(xml: &str) -> Result<Network, XmlError> {
        parse::parse(xml)
    }

    /// Like [`Network::from_xml`], but any unknown element or attribute is an error.
    pub fn from_xml_strict(xml: &str) -> Result<Network, XmlError> {
        let net = parse::parse(xml)?;
        match net.unknown.first() {
            None => Ok(net),
            Some(path) => Err(XmlError::Unknown { path: path.clone() }),
        }
    }

    /// Formats the definition exactly as libvirt's `net-dumpxml` does (its
    /// element order, whatever the input order). Two corners differ by
    /// design: without a UUID no `<uuid>` line is printed (libvirt always
    /// has one; see [`Network::fill_defaults`]), and every string is
    /// escaped, where libvirt prints `<domain name>` and DHCP host names
    /// raw; [`Network::validate`] refuses names for which that matters.
    pub fn to_xml(&self) -> String {
        format::format(self)
    }

    /// Checks the rules libvirt applies when a network is defined (and a few
    /// it only applies at start); returns the first violation.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::validate(self)
    }

    /// Fills in what libvirtd's network driver generates on define: UUID,
    /// bridge name, bridge MAC, STP/delay.
    pub fn fill_defaults(&mut self, ctx: &DefaultsContext) {
        defaults::fill(self, ctx)
    }

    /// Fills in what libvirtd's network driver adds to the live definition
    /// when the network starts, and only there (`net-dumpxml` of a running
    /// network shows it, `--inactive` does not): the NAT port range
    /// `<nat><port start='1024' end='65535'/></nat>` when none is given.
    pub fn fill_live_defaults(&mut self) {
        defaults::fill_live(self)
    }

    /// The forward mode; `None` means isolated.
    pub fn forward_mode(&self) -> Option<ForwardMode> {
        self.forward.as_ref().map(|f| f.mode)
    }

    /// The bridge device name, when set.
    pub fn bridge_name(&self) -> Option<&str> {
        self.bridge.as_ref().and_then(|b| b.name.as_deref())
    }
}
