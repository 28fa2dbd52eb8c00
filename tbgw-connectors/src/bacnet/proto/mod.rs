//! The BACnet/IP protocol layer, written here over tokio UDP (the design card's "BACnet via
//! raw UDP in tokio"): pure encoders and decoders with their own tests, no I/O.
//!
//! * [`tags`]: tag headers and the thirteen application data types ([`tags::AppValue`]).
//! * [`frame`]: BVLC (Annex J), NPDU (clause 6, incl. routed `net:addr` sources and
//!   destinations) and the APDU header (all eight PDU types).
//! * [`services`]: Who-Is/I-Am, ReadProperty, ReadPropertyMultiple, WriteProperty,
//!   SubscribeCOV and COV notifications.
//! * [`ids`]: object type and property names as upstream's config spells them.
//!
//! The transport (one UDP socket, invoke ids, timeouts, answering Who-Is) is
//! [`super::client`].
//!
//! ## Why not a crate
//!
//! * `bacnet-rs` 0.3.2 (checked against bacpypes3 before this work started): its client
//!   is synchronous std UDP, so every request would need a blocking thread, and its README
//!   says "not yet production-ready"; its default features pull ~40 crates for what is
//!   ~1,500 lines of encoding here.
//! * `bacnet-client` (rusty-bacnet) 0.15 is async tokio with segmentation, but needs Rust
//!   1.95 (the workspace's MSRV is 1.88) and a large dependency tree.
//!
//! The subset of BACnet a gateway client needs is small and stable (ASHRAE 135 has not
//! changed these encodings since 1995), and owning it means every decoder is fuzzed here
//! (`fuzz/fuzz_targets/bacnet_apdu.rs`) and never panics on a datagram.
//!
//! Segmentation: segmented ComplexACKs are received (reassembled by
//! [`crate::bacnet::client::Endpoint`], acknowledged window by window); segmented requests
//! are never sent (requests are sized to fit the device's max APDU). Not implemented:
//! BACnet/IPv6 and BACnet/SC.

pub mod frame;
pub mod ids;
pub mod services;
pub mod tags;

pub use tags::{AppValue, DecodeError, ObjectId};

/// Decodes a datagram and, if it carries one, its service data as the connector would
/// (the fuzz target's entry point): never panics.
pub fn decode_all(datagram: &[u8]) -> Result<(), DecodeError> {
    let p = frame::decode(datagram)?;
    match p.apdu {
        Some(frame::Apdu::Unconfirmed { service, data }) => match service {
            services::unconfirmed::I_AM => services::decode_i_am(&data).map(|_| ()),
            services::unconfirmed::WHO_IS => services::decode_who_is(&data).map(|_| ()),
            services::unconfirmed::COV_NOTIFICATION => {
                services::decode_cov_notification(&data).map(|_| ())
            }
            _ => Ok(()),
        },
        Some(frame::Apdu::Confirmed { service, data, .. }) => match service {
            services::confirmed::COV_NOTIFICATION => {
                services::decode_cov_notification(&data).map(|_| ())
            }
            services::confirmed::WRITE_PROPERTY => {
                services::decode_write_property(&data).map(|_| ())
            }
            _ => Ok(()),
        },
        Some(frame::Apdu::ComplexAck { service, data, .. }) => match service {
            services::confirmed::READ_PROPERTY => {
                services::decode_read_property_ack(&data).map(|_| ())
            }
            services::confirmed::READ_PROPERTY_MULTIPLE => {
                services::decode_rpm_ack(&data).map(|_| ())
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
