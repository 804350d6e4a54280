//! Traffic shaping as data: the `<bandwidth>` of a network, a port or a
//! guest interface reduced to what the kernel's traffic control is told
//! (libvirt's `virNetDevBandwidth`), its bounds, and libvirt's accounting
//! of inbound `floor`s against a network's inbound QoS
//! (`networkCheckBandwidth` of libvirt 9.0's bridge driver).
//!
//! Theory of operation: the XML model keeps libvirt's numbers as parsed
//! (KiB/s and KiB, 0 for "not set"). A [`Shape`] is the checked form a
//! backend applies: every rate within [`MAX_RATE`], every burst within
//! [`MAX_BURST`] (tc keeps a burst in a 32-bit byte count). Floors are not
//! part of a shape: they live on the network's bridge as one class per
//! port, numbered from [`FIRST_FLOOR_CLASS`] (classes 1:1 and 1:2 are the
//! network's own), and [`check_floor`] decides whether one more fits.

use serde::{Deserialize, Serialize};
use slipway_netxml::{Bandwidth, BandwidthRate};

/// The largest `average`, `peak` or `floor` slipway applies, in KiB/s
/// (tc's `kbps`): 10^9, 8 Tbit/s, beyond any link, and small enough that
/// tc's bit rate (×8000) and HTB's quantum never overflow.
pub const MAX_RATE: u64 = 1_000_000_000;

/// The largest `burst`, in KiB: tc holds a burst as a 32-bit byte count.
pub const MAX_BURST: u64 = u32::MAX as u64 / 1024;

/// The first class number a port's `floor` gets on the network's bridge
/// (libvirt reserves 0, 1 and 2: the root, the network's class 1:1 and
/// the class 1:2 of traffic without a floor).
pub const FIRST_FLOOR_CLASS: u32 = 3;

/// One direction of a shape: rates in KiB/s, burst in KiB, 0 = not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeRate {
    /// The rate traffic is held to.
    pub average: u64,
    /// The rate a burst may reach (0: `average`).
    pub peak: u64,
    /// How much may be sent at `peak` (0: tc's default).
    pub burst: u64,
}

/// What traffic control applies to one device, seen from the guests:
/// `inbound` is traffic toward them, `outbound` traffic from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Shape {
    /// Toward the guests (the device's transmit side: an HTB qdisc).
    pub inbound: Option<ShapeRate>,
    /// From the guests (the device's receive side: ingress policing).
    pub outbound: Option<ShapeRate>,
}

/// A `<bandwidth>` slipway cannot apply: which rate and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("<bandwidth><{direction} {attribute}='{value}'>: {why}")]
pub struct ShapeError {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The attribute.
    pub attribute: &'static str,
    /// Its value.
    pub value: u64,
    /// What is wrong.
    pub why: String,
}

impl Shape {
    /// The shape of a `<bandwidth>`, checked against the bounds; `None`
    /// when it limits nothing (only a `floor`, which is the bridge's
    /// business, or no rate at all).
    pub fn of(bw: &Bandwidth) -> Result<Option<Shape>, ShapeError> {
        let rate = |direction: &'static str, r: Option<BandwidthRate>| {
            let Some(r) = r else { return Ok(None) };
            let too_big = |attribute: &'static str, value: u64, max: u64, unit: &str| {
                if value > max {
                    Err(ShapeError {
                        direction,
                        attribute,
                        value,
                        why: format!("larger than the {max} {unit} slipway applies"),
                    })
                } else {
                    Ok(())
                }
            };
            too_big("average", r.average, MAX_RATE, "KiB/s")?;
            too_big("peak", r.peak, MAX_RATE, "KiB/s")?;
            too_big("floor", r.floor, MAX_RATE, "KiB/s")?;
            too_big("burst", r.burst, MAX_BURST, "KiB")?;
            Ok((r.average != 0).then_some(ShapeRate {
                average: r.average,
                peak: r.peak,
                burst: r.burst,
            }))
        };
        let shape = Shape {
            inbound: rate("inbound", bw.inbound)?,
            outbound: rate("outbound", bw.outbound)?,
        };
        Ok((shape.inbound.is_some() || shape.outbound.is_some()).then_some(shape))
    }
}

/// How a port's floor fits the network (libvirt's `networkCheckBandwidth`
/// after its two "Invalid use of 'floor'" refusals, which the port code
/// makes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorFit {
    /// No class is needed (the port has no floor, nor had one).
    NoClass,
    /// It fits: `ceiling` is the network's inbound peak (or average), and
    /// class 1:2 gets `ceiling - floor_sum` once the port is counted.
    Fits {
        /// The network's inbound peak, else its average.
        ceiling: u64,
        /// The sum of the floors with this port's new one.
        floor_sum: u64,
    },
}

/// Checks a port's floor `new` (replacing `old`, 0 for a new port) against
/// the network's inbound QoS `net_in` and the floors of the other ports
/// (`others_sum`): libvirt's overcommit refusal, word for word, naming the
/// port's `mac`, the `bridge` and the `network`.
pub fn check_floor(
    net_in: &BandwidthRate,
    others_sum: u64,
    old: u64,
    new: u64,
    mac: &str,
    bridge: &str,
    network: &str,
) -> Result<FloorFit, String> {
    if new == 0 && old == 0 {
        return Ok(FloorFit::NoClass);
    }
    let sum = others_sum.saturating_add(new);
    if net_in.peak != 0 {
        if sum > net_in.peak {
            return Err(format!(
                "Cannot plug '{mac}' interface into '{bridge}' because new combined inbound floor={sum} would overcommit peak={} on network '{network}'",
                net_in.peak
            ));
        }
        return Ok(FloorFit::Fits {
            ceiling: net_in.peak,
            floor_sum: sum,
        });
    }
    if sum > net_in.average {
        return Err(format!(
            "Cannot plug '{mac}' interface into '{bridge}' because new combined inbound floor={sum} would overcommit average={} on network '{network}'",
            net_in.average
        ));
    }
    Ok(FloorFit::Fits {
        ceiling: net_in.average,
        floor_sum: sum,
    })
}

/// One port's floor class on a network's bridge, and what class 1:2 (the
/// traffic without a floor) keeps once the change is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorClass {
    /// The network's bridge.
    pub bridge: String,
    /// The port's MAC address (the filter matches it as destination).
    pub mac: [u8; 6],
    /// The guaranteed rate, KiB/s.
    pub floor: u64,
    /// The class number, from [`FIRST_FLOOR_CLASS`].
    pub class: u32,
    /// The network's inbound peak, else its average: every class's ceiling.
    pub ceiling: u64,
    /// The rate of class 1:2 after the change: `ceiling` less the floors.
    pub rest: u64,
}

/// The lowest class number from [`FIRST_FLOOR_CLASS`] that none of `used`
/// holds (libvirt's `networkNextClassID`).
pub fn next_class(used: impl IntoIterator<Item = u32>) -> u32 {
    let mut used: Vec<u32> = used.into_iter().collect();
    used.sort_unstable();
    let mut next = FIRST_FLOOR_CLASS;
    for u in used {
        if u == next {
            next += 1;
        } else if u > next {
            break;
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(average: u64, peak: u64, floor: u64, burst: u64) -> BandwidthRate {
        BandwidthRate {
            average,
            peak,
            floor,
            burst,
        }
    }

    #[test]
    fn shapes_keep_rates_and_drop_floor_only_directions() {
        let bw = Bandwidth {
            class_id: 0,
            inbound: Some(rate(1000, 2000, 0, 64)),
            outbound: Some(rate(500, 0, 0, 0)),
        };
        let s = Shape::of(&bw).unwrap().unwrap();
        assert_eq!(
            s.inbound,
            Some(ShapeRate {
                average: 1000,
                peak: 2000,
                burst: 64
            })
        );
        assert_eq!(s.outbound.unwrap().average, 500);
        let floor_only = Bandwidth {
            class_id: 3,
            inbound: Some(rate(0, 0, 100, 0)),
            outbound: None,
        };
        assert_eq!(Shape::of(&floor_only).unwrap(), None);
    }

    #[test]
    fn rates_and_bursts_beyond_the_bounds_are_refused_by_name() {
        let big = Bandwidth {
            class_id: 0,
            inbound: None,
            outbound: Some(rate(MAX_RATE + 1, 0, 0, 0)),
        };
        assert_eq!(
            Shape::of(&big).unwrap_err().to_string(),
            "<bandwidth><outbound average='1000000001'>: larger than the 1000000000 KiB/s slipway applies"
        );
        let burst = Bandwidth {
            class_id: 0,
            inbound: Some(rate(10, 0, 0, MAX_BURST + 1)),
            outbound: None,
        };
        let e = Shape::of(&burst).unwrap_err();
        assert_eq!((e.direction, e.attribute), ("inbound", "burst"));
        let edge = Bandwidth {
            class_id: 0,
            inbound: Some(rate(MAX_RATE, MAX_RATE, 0, MAX_BURST)),
            outbound: None,
        };
        assert!(Shape::of(&edge).unwrap().is_some());
    }

    #[test]
    fn floors_are_counted_against_average_or_peak_as_libvirt_does() {
        let avg = rate(1000, 0, 0, 0);
        assert_eq!(
            check_floor(&avg, 600, 0, 400, "m", "br", "n"),
            Ok(FloorFit::Fits {
                ceiling: 1000,
                floor_sum: 1000
            })
        );
        assert_eq!(
            check_floor(&avg, 600, 0, 401, "52:54:00:00:00:01", "virbr9", "lab").unwrap_err(),
            "Cannot plug '52:54:00:00:00:01' interface into 'virbr9' because new combined inbound floor=1001 would overcommit average=1000 on network 'lab'"
        );
        let peak = rate(1000, 1500, 0, 0);
        assert!(check_floor(&peak, 600, 0, 900, "m", "br", "n").is_ok());
        assert!(check_floor(&peak, 600, 0, 901, "m", "br", "n")
            .unwrap_err()
            .contains("would overcommit peak=1500 on network 'n'"));
        assert_eq!(
            check_floor(&avg, 0, 0, 0, "m", "br", "n"),
            Ok(FloorFit::NoClass)
        );
    }

    #[test]
    fn class_numbers_fill_the_lowest_gap_from_three() {
        assert_eq!(next_class([]), 3);
        assert_eq!(next_class([3, 4, 6]), 5);
        assert_eq!(next_class([4, 3]), 5);
        assert_eq!(next_class([0, 7]), 3);
    }
}
