//! The procedures of libvirt's remote program this server answers
//! (numbers and argument layouts from `src/remote/remote_protocol.x`), and
//! the decoding of a call's arguments into a [`Call`].
//!
//! [`PROCEDURES`] is the one table of what is served: its number, whether
//! it changes anything (refused on a read-only connection), and whether it
//! works before `CONNECT_OPEN`; the public API name libvirt's messages use
//! is libvirt's table's (the `remote` module). A number not in it gets what `virtnetworkd` answers
//! (the `remote` module: "not supported", or "unknown procedure" for a
//! number libvirt has no procedure for).

use crate::message::STRING_MAX;
use crate::xdr::{Reader, XdrError};

/// `REMOTE_NETWORK_LIST_MAX`.
pub const NETWORK_LIST_MAX: u32 = 16_384;
/// `REMOTE_NETWORK_DHCP_LEASES_MAX`.
pub const DHCP_LEASES_MAX: u32 = 65_536;
/// `REMOTE_AUTH_TYPE_LIST_MAX`.
pub const AUTH_TYPE_LIST_MAX: u32 = 20;
/// `REMOTE_NETWORK_PORT_LIST_MAX`.
pub const NETWORK_PORT_LIST_MAX: u32 = 16_384;
/// `REMOTE_NETWORK_PORT_PARAMETERS_MAX`.
pub const NETWORK_PORT_PARAMETERS_MAX: u32 = 16;

/// Procedure numbers (`remote_procedure`).
#[allow(missing_docs)]
pub mod num {
    pub const CONNECT_OPEN: i32 = 1;
    pub const CONNECT_CLOSE: i32 = 2;
    pub const CONNECT_GET_TYPE: i32 = 3;
    pub const CONNECT_GET_VERSION: i32 = 4;
    pub const NODE_GET_INFO: i32 = 6;
    pub const CONNECT_GET_CAPABILITIES: i32 = 7;
    pub const CONNECT_LIST_DEFINED_NETWORKS: i32 = 36;
    pub const CONNECT_LIST_NETWORKS: i32 = 38;
    pub const NETWORK_CREATE: i32 = 39;
    pub const NETWORK_CREATE_XML: i32 = 40;
    pub const NETWORK_DEFINE_XML: i32 = 41;
    pub const NETWORK_DESTROY: i32 = 42;
    pub const NETWORK_GET_XML_DESC: i32 = 43;
    pub const NETWORK_GET_AUTOSTART: i32 = 44;
    pub const NETWORK_GET_BRIDGE_NAME: i32 = 45;
    pub const NETWORK_LOOKUP_BY_NAME: i32 = 46;
    pub const NETWORK_LOOKUP_BY_UUID: i32 = 47;
    pub const NETWORK_SET_AUTOSTART: i32 = 48;
    pub const NETWORK_UNDEFINE: i32 = 49;
    pub const CONNECT_NUM_OF_DEFINED_NETWORKS: i32 = 50;
    pub const CONNECT_NUM_OF_NETWORKS: i32 = 52;
    pub const CONNECT_GET_HOSTNAME: i32 = 59;
    pub const CONNECT_SUPPORTS_FEATURE: i32 = 60;
    pub const AUTH_LIST: i32 = 66;
    pub const CONNECT_GET_URI: i32 = 110;
    pub const CONNECT_IS_SECURE: i32 = 149;
    pub const NETWORK_IS_ACTIVE: i32 = 152;
    pub const NETWORK_IS_PERSISTENT: i32 = 153;
    pub const CONNECT_GET_LIB_VERSION: i32 = 157;
    pub const CONNECT_LIST_ALL_DOMAINS: i32 = 273;
    pub const CONNECT_LIST_ALL_NETWORKS: i32 = 283;
    pub const NETWORK_UPDATE: i32 = 291;
    pub const CONNECT_NETWORK_EVENT_REGISTER_ANY: i32 = 313;
    pub const CONNECT_NETWORK_EVENT_DEREGISTER_ANY: i32 = 314;
    pub const NETWORK_EVENT_LIFECYCLE: i32 = 315;
    pub const NETWORK_GET_DHCP_LEASES: i32 = 341;
    pub const CONNECT_REGISTER_CLOSE_CALLBACK: i32 = 360;
    pub const CONNECT_UNREGISTER_CLOSE_CALLBACK: i32 = 361;
    pub const NETWORK_LIST_ALL_PORTS: i32 = 404;
    pub const NETWORK_PORT_LOOKUP_BY_UUID: i32 = 405;
    pub const NETWORK_PORT_CREATE_XML: i32 = 406;
    pub const NETWORK_PORT_GET_PARAMETERS: i32 = 407;
    pub const NETWORK_PORT_SET_PARAMETERS: i32 = 408;
    pub const NETWORK_PORT_GET_XML_DESC: i32 = 409;
    pub const NETWORK_PORT_DELETE: i32 = 410;
    pub const NETWORK_DEFINE_XML_FLAGS: i32 = 432;
    pub const NETWORK_CREATE_XML_FLAGS: i32 = 437;
}

/// One served procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Procedure {
    /// Its number.
    pub num: i32,
    /// Changes something: refused on a read-only connection.
    pub writes: bool,
    /// Allowed before `CONNECT_OPEN`.
    pub before_open: bool,
}

impl Procedure {
    /// The public API function libvirt names in its messages (libvirt's
    /// table, [`crate::remote::REMOTE_PROCS`], has every served procedure).
    pub fn api(&self) -> &'static str {
        crate::remote::lookup(self.num).map_or("", |r| r.api)
    }
}

/// A procedure that only reads (allowed on a read-only connection).
const fn reads(num: i32) -> Procedure {
    Procedure {
        num,
        writes: false,
        before_open: false,
    }
}

/// A procedure that changes something.
const fn writes(num: i32) -> Procedure {
    Procedure {
        writes: true,
        ..reads(num)
    }
}

/// A procedure allowed before `CONNECT_OPEN` (it only reads).
const fn pre(num: i32) -> Procedure {
    Procedure {
        before_open: true,
        ..reads(num)
    }
}

/// Every procedure served.
pub const PROCEDURES: &[Procedure] = &[
    pre(num::CONNECT_OPEN),
    pre(num::CONNECT_CLOSE),
    pre(num::AUTH_LIST),
    pre(num::CONNECT_SUPPORTS_FEATURE),
    reads(num::CONNECT_GET_TYPE),
    reads(num::CONNECT_GET_VERSION),
    reads(num::CONNECT_GET_LIB_VERSION),
    reads(num::CONNECT_GET_HOSTNAME),
    reads(num::CONNECT_GET_URI),
    reads(num::CONNECT_IS_SECURE),
    // Not virtnetworkd's: the host-level calls virt-manager needs (`host`).
    reads(num::NODE_GET_INFO),
    reads(num::CONNECT_GET_CAPABILITIES),
    reads(num::CONNECT_LIST_ALL_DOMAINS),
    reads(num::CONNECT_REGISTER_CLOSE_CALLBACK),
    reads(num::CONNECT_UNREGISTER_CLOSE_CALLBACK),
    reads(num::CONNECT_NUM_OF_NETWORKS),
    reads(num::CONNECT_LIST_NETWORKS),
    reads(num::CONNECT_NUM_OF_DEFINED_NETWORKS),
    reads(num::CONNECT_LIST_DEFINED_NETWORKS),
    reads(num::CONNECT_LIST_ALL_NETWORKS),
    reads(num::NETWORK_LOOKUP_BY_NAME),
    reads(num::NETWORK_LOOKUP_BY_UUID),
    writes(num::NETWORK_CREATE),
    writes(num::NETWORK_CREATE_XML),
    writes(num::NETWORK_CREATE_XML_FLAGS),
    writes(num::NETWORK_DEFINE_XML),
    writes(num::NETWORK_DEFINE_XML_FLAGS),
    writes(num::NETWORK_DESTROY),
    writes(num::NETWORK_UNDEFINE),
    reads(num::NETWORK_GET_XML_DESC),
    reads(num::NETWORK_GET_AUTOSTART),
    writes(num::NETWORK_SET_AUTOSTART),
    reads(num::NETWORK_GET_BRIDGE_NAME),
    reads(num::NETWORK_IS_ACTIVE),
    reads(num::NETWORK_IS_PERSISTENT),
    writes(num::NETWORK_UPDATE),
    reads(num::NETWORK_GET_DHCP_LEASES),
    reads(num::CONNECT_NETWORK_EVENT_REGISTER_ANY),
    reads(num::CONNECT_NETWORK_EVENT_DEREGISTER_ANY),
    reads(num::NETWORK_LIST_ALL_PORTS),
    reads(num::NETWORK_PORT_LOOKUP_BY_UUID),
    writes(num::NETWORK_PORT_CREATE_XML),
    reads(num::NETWORK_PORT_GET_PARAMETERS),
    writes(num::NETWORK_PORT_SET_PARAMETERS),
    reads(num::NETWORK_PORT_GET_XML_DESC),
    writes(num::NETWORK_PORT_DELETE),
];

/// The served procedure `num`, if any.
pub fn procedure(num: i32) -> Option<&'static Procedure> {
    PROCEDURES.iter().find(|p| p.num == num)
}

/// `remote_nonnull_network`: how a network travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRef {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
}

impl NetRef {
    fn read(r: &mut Reader) -> Result<NetRef, XdrError> {
        Ok(NetRef {
            name: r.string(STRING_MAX)?,
            uuid: r.opaque_fixed::<16>()?,
        })
    }
}

/// `remote_nonnull_network_port`: how a network port travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRef {
    /// Its network.
    pub net: NetRef,
    /// Its UUID.
    pub uuid: [u8; 16],
}

impl PortRef {
    fn read(r: &mut Reader) -> Result<PortRef, XdrError> {
        Ok(PortRef {
            net: NetRef::read(r)?,
            uuid: r.opaque_fixed::<16>()?,
        })
    }
}

/// `remote_typed_param_value`: one typed parameter's value, by its
/// `VIR_TYPED_PARAM_*` discriminant (a double is kept as its bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedValue {
    /// `VIR_TYPED_PARAM_INT`.
    Int(i32),
    /// `VIR_TYPED_PARAM_UINT`.
    UInt(u32),
    /// `VIR_TYPED_PARAM_LLONG`.
    LLong(i64),
    /// `VIR_TYPED_PARAM_ULLONG`.
    ULLong(u64),
    /// `VIR_TYPED_PARAM_DOUBLE`, as the bits of the IEEE double.
    Double(u64),
    /// `VIR_TYPED_PARAM_BOOLEAN`.
    Boolean(i32),
    /// `VIR_TYPED_PARAM_STRING`.
    String(String),
}

impl TypedValue {
    /// libvirt's name of the type (`virTypedParameterTypeToString`).
    pub fn type_name(&self) -> &'static str {
        match self {
            TypedValue::Int(_) => "int",
            TypedValue::UInt(_) => "uint",
            TypedValue::LLong(_) => "llong",
            TypedValue::ULLong(_) => "ullong",
            TypedValue::Double(_) => "double",
            TypedValue::Boolean(_) => "boolean",
            TypedValue::String(_) => "string",
        }
    }

    fn read(r: &mut Reader) -> Result<TypedValue, XdrError> {
        Ok(match r.u32()? {
            1 => TypedValue::Int(r.i32()?),
            2 => TypedValue::UInt(r.u32()?),
            3 => TypedValue::LLong(r.u64()? as i64),
            4 => TypedValue::ULLong(r.u64()?),
            5 => TypedValue::Double(r.u64()?),
            6 => TypedValue::Boolean(r.i32()?),
            7 => TypedValue::String(r.string(STRING_MAX)?),
            n => return Err(XdrError::BadDiscriminant(n)),
        })
    }
}

/// `remote_typed_param`: a named, typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedParam {
    /// Its field name.
    pub field: String,
    /// Its value.
    pub value: TypedValue,
}

impl TypedParam {
    fn read(r: &mut Reader) -> Result<TypedParam, XdrError> {
        Ok(TypedParam {
            field: r.string(STRING_MAX)?,
            value: TypedValue::read(r)?,
        })
    }
}

/// A decoded call: one variant per argument layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// No arguments.
    Void,
    /// `remote_connect_open_args`.
    Open {
        /// The URI asked for (none: the default).
        name: Option<String>,
        /// `VIR_CONNECT_RO` = 1.
        flags: u32,
    },
    /// `remote_connect_supports_feature_args`.
    Feature(i32),
    /// `maxnames` of the old list calls.
    MaxNames(i32),
    /// `remote_connect_list_all_networks_args` (and `…_domains_args`,
    /// the same layout).
    ListAll {
        /// Whether the client wants the list (else only the count).
        need_results: bool,
        /// `VIR_CONNECT_LIST_NETWORKS_*`.
        flags: u32,
    },
    /// A network name.
    Name(String),
    /// A UUID.
    Uuid([u8; 16]),
    /// An XML document and flags (0 for the calls without flags).
    Xml {
        /// The document.
        xml: String,
        /// Flags.
        flags: u32,
    },
    /// A network.
    Net(NetRef),
    /// A network and flags (`GET_XML_DESC`).
    NetFlags(NetRef, u32),
    /// A network and an int (`SET_AUTOSTART`).
    NetInt(NetRef, i32),
    /// `remote_network_update_args`.
    Update {
        /// The network.
        net: NetRef,
        /// `VIR_NETWORK_UPDATE_COMMAND_*`.
        command: u32,
        /// `VIR_NETWORK_SECTION_*`.
        section: u32,
        /// Which `<ip>`, -1 for the one with DHCP.
        parent_index: i32,
        /// The element.
        xml: String,
        /// `VIR_NETWORK_UPDATE_AFFECT_*`.
        flags: u32,
    },
    /// `remote_network_get_dhcp_leases_args`.
    Leases {
        /// The network.
        net: NetRef,
        /// Only this MAC.
        mac: Option<String>,
        /// Whether the client wants the list.
        need_results: bool,
        /// Flags (none defined).
        flags: u32,
    },
    /// `remote_connect_network_event_register_any_args`.
    EventRegister {
        /// `VIR_NETWORK_EVENT_ID_*`.
        event_id: i32,
        /// Only this network's events.
        net: Option<NetRef>,
    },
    /// `remote_connect_network_event_deregister_any_args`.
    EventDeregister(i32),
    /// `remote_network_list_all_ports_args`.
    ListPorts {
        /// The network.
        net: NetRef,
        /// Whether the client wants the list (else only the count).
        need_results: bool,
        /// Flags (none defined).
        flags: u32,
    },
    /// `remote_network_port_lookup_by_uuid_args`.
    PortLookup {
        /// The network.
        net: NetRef,
        /// The port's UUID.
        uuid: [u8; 16],
    },
    /// `remote_network_port_create_xml_args`.
    PortCreate {
        /// The network.
        net: NetRef,
        /// The port's XML.
        xml: String,
        /// `VIR_NETWORK_PORT_CREATE_*`.
        flags: u32,
    },
    /// `remote_network_port_get_parameters_args` (its `nparams` is
    /// ignored, as libvirt's dispatcher ignores it).
    PortGetParameters {
        /// The port.
        port: PortRef,
        /// Flags (none defined).
        flags: u32,
    },
    /// `remote_network_port_set_parameters_args`.
    PortSetParameters {
        /// The port.
        port: PortRef,
        /// At most [`NETWORK_PORT_PARAMETERS_MAX`] parameters.
        params: Vec<TypedParam>,
        /// Flags (none defined).
        flags: u32,
    },
    /// A port and flags (`PORT_GET_XML_DESC`, `PORT_DELETE`).
    PortFlags(PortRef, u32),
}

impl Call {
    /// Decodes the arguments of procedure `proc_` (one of
    /// [`PROCEDURES`]); trailing bytes are ignored, as libvirt ignores them.
    pub fn decode(proc_: i32, payload: &[u8]) -> Result<Call, XdrError> {
        use num::*;
        let r = &mut Reader::new(payload);
        Ok(match proc_ {
            CONNECT_OPEN => Call::Open {
                name: r.optional(|r| r.string(STRING_MAX))?,
                flags: r.u32()?,
            },
            CONNECT_SUPPORTS_FEATURE => Call::Feature(r.i32()?),
            CONNECT_LIST_NETWORKS | CONNECT_LIST_DEFINED_NETWORKS => Call::MaxNames(r.i32()?),
            CONNECT_LIST_ALL_NETWORKS | CONNECT_LIST_ALL_DOMAINS => Call::ListAll {
                need_results: r.i32()? != 0,
                flags: r.u32()?,
            },
            NETWORK_LOOKUP_BY_NAME => Call::Name(r.string(STRING_MAX)?),
            NETWORK_LOOKUP_BY_UUID => Call::Uuid(r.opaque_fixed::<16>()?),
            NETWORK_CREATE_XML | NETWORK_DEFINE_XML => Call::Xml {
                xml: r.string(STRING_MAX)?,
                flags: 0,
            },
            NETWORK_CREATE_XML_FLAGS | NETWORK_DEFINE_XML_FLAGS => Call::Xml {
                xml: r.string(STRING_MAX)?,
                flags: r.u32()?,
            },
            NETWORK_CREATE
            | NETWORK_DESTROY
            | NETWORK_UNDEFINE
            | NETWORK_GET_AUTOSTART
            | NETWORK_GET_BRIDGE_NAME
            | NETWORK_IS_ACTIVE
            | NETWORK_IS_PERSISTENT => Call::Net(NetRef::read(r)?),
            NETWORK_GET_XML_DESC => Call::NetFlags(NetRef::read(r)?, r.u32()?),
            NETWORK_SET_AUTOSTART => Call::NetInt(NetRef::read(r)?, r.i32()?),
            NETWORK_UPDATE => Call::Update {
                net: NetRef::read(r)?,
                command: r.u32()?,
                section: r.u32()?,
                parent_index: r.i32()?,
                xml: r.string(STRING_MAX)?,
                flags: r.u32()?,
            },
            NETWORK_GET_DHCP_LEASES => Call::Leases {
                net: NetRef::read(r)?,
                mac: r.optional(|r| r.string(STRING_MAX))?,
                need_results: r.i32()? != 0,
                flags: r.u32()?,
            },
            CONNECT_NETWORK_EVENT_REGISTER_ANY => Call::EventRegister {
                event_id: r.i32()?,
                net: r.optional(NetRef::read)?,
            },
            CONNECT_NETWORK_EVENT_DEREGISTER_ANY => Call::EventDeregister(r.i32()?),
            NETWORK_LIST_ALL_PORTS => Call::ListPorts {
                net: NetRef::read(r)?,
                need_results: r.i32()? != 0,
                flags: r.u32()?,
            },
            NETWORK_PORT_LOOKUP_BY_UUID => Call::PortLookup {
                net: NetRef::read(r)?,
                uuid: r.opaque_fixed::<16>()?,
            },
            NETWORK_PORT_CREATE_XML => Call::PortCreate {
                net: NetRef::read(r)?,
                xml: r.string(STRING_MAX)?,
                flags: r.u32()?,
            },
            NETWORK_PORT_GET_PARAMETERS => {
                let port = PortRef::read(r)?;
                let _nparams = r.i32()?;
                Call::PortGetParameters {
                    port,
                    flags: r.u32()?,
                }
            }
            NETWORK_PORT_SET_PARAMETERS => Call::PortSetParameters {
                port: PortRef::read(r)?,
                // A parameter is at least a field's length word, a type
                // and a 4-byte value.
                params: r.array(NETWORK_PORT_PARAMETERS_MAX, 12, TypedParam::read)?,
                flags: r.u32()?,
            },
            NETWORK_PORT_GET_XML_DESC | NETWORK_PORT_DELETE => {
                Call::PortFlags(PortRef::read(r)?, r.u32()?)
            }
            _ => Call::Void,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::Writer;

    #[test]
    fn every_procedure_is_listed_once() {
        for p in PROCEDURES {
            assert_eq!(
                PROCEDURES.iter().filter(|q| q.num == p.num).count(),
                1,
                "{}",
                p.api()
            );
        }
        assert!(
            procedure(num::NETWORK_EVENT_LIFECYCLE).is_none(),
            "a MESSAGE, not a call"
        );
    }

    #[test]
    fn update_arguments_in_protocol_order() {
        let mut w = Writer::new();
        w.string("n")
            .opaque_fixed(&[1; 16])
            .u32(3)
            .u32(4)
            .i32(-1)
            .string("<host/>")
            .u32(2);
        let call = Call::decode(num::NETWORK_UPDATE, &w.into_bytes()).unwrap();
        assert_eq!(
            call,
            Call::Update {
                net: NetRef {
                    name: "n".into(),
                    uuid: [1; 16]
                },
                command: 3,
                section: 4,
                parent_index: -1,
                xml: "<host/>".into(),
                flags: 2
            }
        );
        assert!(Call::decode(num::NETWORK_UPDATE, &[0, 0, 0, 1]).is_err());
    }

    /// `remote_network_port_set_parameters_args`: every typed value
    /// decodes by its discriminant; more than
    /// `REMOTE_NETWORK_PORT_PARAMETERS_MAX` parameters or an unknown type
    /// is a decoding error.
    #[test]
    fn port_set_parameters_decode_typed_values() {
        let port = |w: &mut Writer| {
            w.string("n").opaque_fixed(&[1; 16]).opaque_fixed(&[2; 16]);
        };
        let mut w = Writer::new();
        port(&mut w);
        w.u32(3)
            .string("inbound.average")
            .u32(2)
            .u32(7)
            .string("a")
            .u32(7)
            .string("s")
            .string("b")
            .u32(4)
            .u64(1 << 40)
            .u32(0);
        let call = Call::decode(num::NETWORK_PORT_SET_PARAMETERS, &w.into_bytes()).unwrap();
        let Call::PortSetParameters {
            port: p,
            params,
            flags,
        } = call
        else {
            panic!("{call:?}");
        };
        assert_eq!((p.net.name.as_str(), p.uuid, flags), ("n", [2; 16], 0));
        assert_eq!(
            params.iter().map(|p| p.value.clone()).collect::<Vec<_>>(),
            vec![
                TypedValue::UInt(7),
                TypedValue::String("s".into()),
                TypedValue::ULLong(1 << 40)
            ]
        );
        let mut w = Writer::new();
        port(&mut w);
        w.u32(1).string("x").u32(8).u32(0).u32(0);
        assert!(Call::decode(num::NETWORK_PORT_SET_PARAMETERS, &w.into_bytes()).is_err());
        let mut w = Writer::new();
        port(&mut w);
        w.u32(NETWORK_PORT_PARAMETERS_MAX + 1);
        for _ in 0..=NETWORK_PORT_PARAMETERS_MAX {
            w.string("x").u32(2).u32(1);
        }
        w.u32(0);
        assert!(Call::decode(num::NETWORK_PORT_SET_PARAMETERS, &w.into_bytes()).is_err());
    }
}
