//! The network port API's types: what the manager's port operations take
//! and return ([`crate::Manager::port_create`] and the others), shared by
//! the JSON-lines daemon API and any other front end (libvirt's RPC).
//!
//! A port's bandwidth travels as libvirt's typed parameters
//! (`virNetworkPortGetParameters`/`SetParameters`): seven unsigned 32-bit
//! values named `inbound.average` … `outbound.burst`. [`PortParameters`]
//! is that list as a struct; [`PortParam`] names one entry.

use serde::{Deserialize, Serialize};
use slipway_netxml::{Bandwidth, BandwidthRate};

use crate::error::{Error, Result};

/// A port UUID as typed, read as libvirt's
/// `virNetworkPortLookupByUUIDString` reads it (white space around, `-`
/// and spaces between the 32 hex digits), with its error otherwise.
pub fn port_uuid(text: &str) -> Result<uuid::Uuid> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect();
    let valid = digits.len() == 32 && digits.chars().all(|c| c.is_ascii_hexdigit());
    valid
        .then(|| uuid::Uuid::parse_str(&digits).ok())
        .flatten()
        .ok_or_else(|| {
            Error::InvalidArg(
                "uuidstr in virNetworkPortLookupByUUIDString must be a valid UUID".into(),
            )
        })
}

/// How a port is created (libvirt's `virNetworkPortCreateFlags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCreateFlags {
    /// `VIR_NETWORK_PORT_CREATE_RECLAIM`: take back a port that already
    /// has its plug (a VM found running after a restart); without it the
    /// port must have no plug and the network allocates one.
    pub reclaim: bool,
    /// `VIR_NETWORK_PORT_CREATE_VALIDATE`: refuse elements and attributes
    /// libvirt's schema does not have (slipway: any the model ignores).
    pub validate: bool,
}

/// A port of a network, as the API names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRef {
    /// The network's name.
    pub network: String,
    /// The port's UUID.
    #[serde(with = "uuid_text")]
    pub uuid: uuid::Uuid,
}

/// A UUID in the JSON API as its usual text (the `uuid` crate is built
/// here without its serde support).
mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(u: &uuid::Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(u)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<uuid::Uuid, D::Error> {
        let text = String::deserialize(d)?;
        uuid::Uuid::parse_str(&text).map_err(serde::de::Error::custom)
    }
}

/// One of libvirt's network port parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortParam {
    /// `inbound.average` (kB/s).
    InboundAverage,
    /// `inbound.peak` (kB/s).
    InboundPeak,
    /// `inbound.floor` (kB/s).
    InboundFloor,
    /// `inbound.burst` (kB).
    InboundBurst,
    /// `outbound.average` (kB/s).
    OutboundAverage,
    /// `outbound.peak` (kB/s).
    OutboundPeak,
    /// `outbound.burst` (kB).
    OutboundBurst,
}

impl PortParam {
    /// Every parameter, in the order libvirt's network driver returns them.
    pub const ALL: [PortParam; 7] = [
        PortParam::InboundAverage,
        PortParam::InboundPeak,
        PortParam::InboundFloor,
        PortParam::InboundBurst,
        PortParam::OutboundAverage,
        PortParam::OutboundPeak,
        PortParam::OutboundBurst,
    ];

    /// libvirt's field name (`VIR_NETWORK_PORT_BANDWIDTH_IN_AVERAGE` is
    /// `inbound.average`, and so on).
    pub fn name(self) -> &'static str {
        match self {
            PortParam::InboundAverage => "inbound.average",
            PortParam::InboundPeak => "inbound.peak",
            PortParam::InboundFloor => "inbound.floor",
            PortParam::InboundBurst => "inbound.burst",
            PortParam::OutboundAverage => "outbound.average",
            PortParam::OutboundPeak => "outbound.peak",
            PortParam::OutboundBurst => "outbound.burst",
        }
    }

    /// The parameter of that field name; `None` for any other name (which
    /// libvirt's network driver ignores when setting).
    pub fn from_name(name: &str) -> Option<PortParam> {
        PortParam::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One direction's rate as typed parameters (0 = unset, as in libvirt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateParams {
    /// `average`.
    pub average: u32,
    /// `peak`.
    pub peak: u32,
    /// `floor` (inbound only; ignored outbound).
    pub floor: u32,
    /// `burst`.
    pub burst: u32,
}

/// A port's bandwidth as libvirt's typed parameters: a direction that is
/// absent has no parameters at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortParameters {
    /// The inbound rate.
    pub inbound: Option<RateParams>,
    /// The outbound rate.
    pub outbound: Option<RateParams>,
}

impl PortParameters {
    /// The parameters libvirt's `networkPortGetParameters` returns for a
    /// port's bandwidth: the four inbound ones when it has an inbound rate,
    /// the three outbound ones when it has an outbound rate. Values above
    /// 2^32-1 are cut to their low 32 bits, as libvirt's
    /// `virTypedParamsAddUInt` of its 64-bit rates does.
    pub fn of_bandwidth(bw: Option<&Bandwidth>) -> PortParameters {
        // Truncation on purpose: libvirt's parameters are 32-bit.
        let rate = |r: &BandwidthRate| RateParams {
            average: r.average as u32,
            peak: r.peak as u32,
            floor: r.floor as u32,
            burst: r.burst as u32,
        };
        PortParameters {
            inbound: bw.and_then(|b| b.inbound.as_ref()).map(rate),
            outbound: bw.and_then(|b| b.outbound.as_ref()).map(|r| RateParams {
                floor: 0,
                ..rate(r)
            }),
        }
    }

    /// As a list of (parameter, value), in libvirt's order.
    pub fn to_list(&self) -> Vec<(PortParam, u32)> {
        let mut out = Vec::new();
        if let Some(r) = self.inbound {
            out.extend([
                (PortParam::InboundAverage, r.average),
                (PortParam::InboundPeak, r.peak),
                (PortParam::InboundFloor, r.floor),
                (PortParam::InboundBurst, r.burst),
            ]);
        }
        if let Some(r) = self.outbound {
            out.extend([
                (PortParam::OutboundAverage, r.average),
                (PortParam::OutboundPeak, r.peak),
                (PortParam::OutboundBurst, r.burst),
            ]);
        }
        out
    }

    /// The bandwidth a `networkPortSetParameters` call with `list` sets:
    /// fields not given are 0 (a later value of a field replaces an earlier
    /// one); a direction without `average` (nor `floor`, inbound) is
    /// dropped, as libvirt drops it.
    pub fn from_list(list: &[(PortParam, u32)]) -> PortParameters {
        let (mut i, mut o) = (RateParams::default(), RateParams::default());
        for &(p, v) in list {
            match p {
                PortParam::InboundAverage => i.average = v,
                PortParam::InboundPeak => i.peak = v,
                PortParam::InboundFloor => i.floor = v,
                PortParam::InboundBurst => i.burst = v,
                PortParam::OutboundAverage => o.average = v,
                PortParam::OutboundPeak => o.peak = v,
                PortParam::OutboundBurst => o.burst = v,
            }
        }
        PortParameters {
            inbound: (i.average != 0 || i.floor != 0).then_some(i),
            outbound: (o.average != 0).then_some(o),
        }
    }

    /// The port bandwidth these parameters describe, keeping `class_id`
    /// (the traffic class of an earlier floor); `None` when both
    /// directions are absent.
    pub fn to_bandwidth(&self, class_id: u32) -> Option<Bandwidth> {
        let rate = |r: RateParams| BandwidthRate {
            average: r.average.into(),
            peak: r.peak.into(),
            floor: r.floor.into(),
            burst: r.burst.into(),
        };
        if self.inbound.is_none() && self.outbound.is_none() {
            return None;
        }
        Some(Bandwidth {
            class_id,
            inbound: self.inbound.map(rate),
            outbound: self.outbound.map(|r| BandwidthRate {
                floor: 0,
                ..rate(r)
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_libvirts() {
        let names: Vec<&str> = PortParam::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "inbound.average",
                "inbound.peak",
                "inbound.floor",
                "inbound.burst",
                "outbound.average",
                "outbound.peak",
                "outbound.burst"
            ]
        );
        for p in PortParam::ALL {
            assert_eq!(PortParam::from_name(p.name()), Some(p));
        }
        assert_eq!(PortParam::from_name("inbound.color"), None);
    }

    /// networkPortSetParameters: missing fields are 0, a direction without
    /// average (or inbound floor) is dropped.
    #[test]
    fn set_semantics_follow_libvirt() {
        let p = PortParameters::from_list(&[
            (PortParam::InboundPeak, 9),
            (PortParam::OutboundAverage, 5),
            (PortParam::OutboundAverage, 6),
        ]);
        assert_eq!(p.inbound, None);
        assert_eq!(
            p.outbound,
            Some(RateParams {
                average: 6,
                ..Default::default()
            })
        );
        assert_eq!(
            p.to_list(),
            vec![
                (PortParam::OutboundAverage, 6),
                (PortParam::OutboundPeak, 0),
                (PortParam::OutboundBurst, 0)
            ]
        );
        let bw = p.to_bandwidth(3).unwrap();
        assert_eq!((bw.class_id, bw.outbound.unwrap().average), (3, 6));
        assert_eq!(PortParameters::from_list(&[]).to_bandwidth(0), None);
        // A 64-bit rate is cut to 32 bits, as libvirt's UInt parameter.
        let big = Bandwidth {
            class_id: 0,
            inbound: Some(BandwidthRate {
                average: (1 << 32) + 7,
                ..Default::default()
            }),
            outbound: None,
        };
        assert_eq!(
            PortParameters::of_bandwidth(Some(&big))
                .inbound
                .unwrap()
                .average,
            7
        );
    }
}
