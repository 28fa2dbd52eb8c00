//! The services the connector uses (clause 13, 15, 16): Who-Is/I-Am, ReadProperty,
//! ReadPropertyMultiple, WriteProperty, SubscribeCOV and COV notifications. Requests are
//! encoded to service data (what follows the APDU header); acks and notifications are
//! decoded from it, never panicking on malformed input.

use super::tags::{AppValue, DecodeError, ObjectId, Reader, Writer};

/// Confirmed service choices.
pub mod confirmed {
    /// ConfirmedCOVNotification.
    pub const COV_NOTIFICATION: u8 = 1;
    /// SubscribeCOV.
    pub const SUBSCRIBE_COV: u8 = 5;
    /// ReadProperty.
    pub const READ_PROPERTY: u8 = 12;
    /// ReadPropertyMultiple.
    pub const READ_PROPERTY_MULTIPLE: u8 = 14;
    /// WriteProperty.
    pub const WRITE_PROPERTY: u8 = 15;
}

/// Unconfirmed service choices.
pub mod unconfirmed {
    /// I-Am.
    pub const I_AM: u8 = 0;
    /// UnconfirmedCOVNotification.
    pub const COV_NOTIFICATION: u8 = 2;
    /// Who-Is.
    pub const WHO_IS: u8 = 8;
}

/// A property reference: property id and optional array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropRef {
    /// The property identifier.
    pub property: u32,
    /// The array index.
    pub index: Option<u32>,
}

/// Who-Is with an optional instance range.
pub fn who_is(range: Option<(u32, u32)>) -> Vec<u8> {
    let mut w = Writer::new();
    if let Some((lo, hi)) = range {
        w.context_unsigned(0, u64::from(lo));
        w.context_unsigned(1, u64::from(hi));
    }
    w.buf
}

/// Decodes a Who-Is: its instance range, if any.
pub fn decode_who_is(b: &[u8]) -> Result<Option<(u32, u32)>, DecodeError> {
    if b.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(b);
    let lo = r.context_unsigned(0)?;
    let hi = r.context_unsigned(1)?;
    Ok(Some((
        u32::try_from(lo).unwrap_or(u32::MAX),
        u32::try_from(hi).unwrap_or(u32::MAX),
    )))
}

/// An I-Am.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IAm {
    /// The device object.
    pub device: ObjectId,
    /// Max APDU length accepted.
    pub max_apdu: u32,
    /// Segmentation supported (0 both, 1 transmit, 2 receive, 3 none).
    pub segmentation: u32,
    /// Vendor id.
    pub vendor: u32,
}

/// Encodes an I-Am.
pub fn i_am(i: &IAm) -> Vec<u8> {
    let mut w = Writer::new();
    w.app(&AppValue::Object(i.device));
    w.app(&AppValue::Unsigned(u64::from(i.max_apdu)));
    w.app(&AppValue::Enumerated(i.segmentation));
    w.app(&AppValue::Unsigned(u64::from(i.vendor)));
    w.buf
}

/// Decodes an I-Am.
pub fn decode_i_am(b: &[u8]) -> Result<IAm, DecodeError> {
    let mut r = Reader::new(b);
    let (
        AppValue::Object(device),
        AppValue::Unsigned(max),
        AppValue::Enumerated(seg),
        AppValue::Unsigned(vendor),
    ) = (
        r.app_value()?,
        r.app_value()?,
        r.app_value()?,
        r.app_value()?,
    )
    else {
        return Err(DecodeError::new("I-Am fields have the wrong types"));
    };
    Ok(IAm {
        device,
        max_apdu: u32::try_from(max).unwrap_or(u32::MAX),
        segmentation: seg,
        vendor: u32::try_from(vendor).unwrap_or(u32::MAX),
    })
}

/// ReadProperty request.
pub fn read_property(o: ObjectId, p: PropRef) -> Vec<u8> {
    let mut w = Writer::new();
    w.context_object(0, o);
    w.context_unsigned(1, u64::from(p.property));
    if let Some(i) = p.index {
        w.context_unsigned(2, u64::from(i));
    }
    w.buf
}

/// Decodes a ReadProperty ack: object, property and value.
pub fn decode_read_property_ack(b: &[u8]) -> Result<(ObjectId, PropRef, AppValue), DecodeError> {
    let mut r = Reader::new(b);
    let o = r.context_object(0)?;
    let property = prop_id(r.context_unsigned(1)?)?;
    let index = if r.next_is_context(2) {
        Some(prop_id(r.context_unsigned(2)?)?)
    } else {
        None
    };
    r.open(3)?;
    let v = r.value_until_close(3)?;
    Ok((o, PropRef { property, index }, v))
}

fn prop_id(v: u64) -> Result<u32, DecodeError> {
    u32::try_from(v).map_err(|_| DecodeError::new("property identifier too large"))
}

/// ReadPropertyMultiple request for objects and their properties.
pub fn read_property_multiple(items: &[(ObjectId, Vec<PropRef>)]) -> Vec<u8> {
    let mut w = Writer::new();
    for (o, props) in items {
        w.context_object(0, *o);
        w.open(1);
        for p in props {
            w.context_unsigned(0, u64::from(p.property));
            if let Some(i) = p.index {
                w.context_unsigned(1, u64::from(i));
            }
        }
        w.close(1);
    }
    w.buf
}

/// One result of a ReadPropertyMultiple: a value or a BACnet error (class, code).
pub type PropResult = Result<AppValue, (u32, u32)>;

/// Decodes a ReadPropertyMultiple ack.
pub fn decode_rpm_ack(b: &[u8]) -> Result<Vec<(ObjectId, PropRef, PropResult)>, DecodeError> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.is_empty() {
        let o = r.context_object(0)?;
        r.open(1)?;
        while !r.next_is_close(1) {
            let property = prop_id(r.context_unsigned(2)?)?;
            let index = if r.next_is_context(3) {
                Some(prop_id(r.context_unsigned(3)?)?)
            } else {
                None
            };
            let p = PropRef { property, index };
            if r.next_is_open(4) {
                r.tag()?;
                out.push((o, p, Ok(r.value_until_close(4)?)));
            } else {
                r.open(5)?;
                let class = match r.app_value()? {
                    AppValue::Enumerated(c) => c,
                    _ => return Err(DecodeError::new("error class is not an enumeration")),
                };
                let code = match r.app_value()? {
                    AppValue::Enumerated(c) => c,
                    _ => return Err(DecodeError::new("error code is not an enumeration")),
                };
                r.close(5)?;
                out.push((o, p, Err((class, code))));
            }
        }
        r.close(1)?;
    }
    Ok(out)
}

/// WriteProperty request.
pub fn write_property(o: ObjectId, p: PropRef, value: &AppValue, priority: Option<u8>) -> Vec<u8> {
    let mut w = Writer::new();
    w.context_object(0, o);
    w.context_unsigned(1, u64::from(p.property));
    if let Some(i) = p.index {
        w.context_unsigned(2, u64::from(i));
    }
    w.open(3);
    w.app(value);
    w.close(3);
    if let Some(pr) = priority {
        w.context_unsigned(4, u64::from(pr));
    }
    w.buf
}

/// Decodes a WriteProperty request (for tests and peers).
pub fn decode_write_property(
    b: &[u8],
) -> Result<(ObjectId, PropRef, AppValue, Option<u8>), DecodeError> {
    let mut r = Reader::new(b);
    let o = r.context_object(0)?;
    let property = prop_id(r.context_unsigned(1)?)?;
    let index = if r.next_is_context(2) {
        Some(prop_id(r.context_unsigned(2)?)?)
    } else {
        None
    };
    r.open(3)?;
    let v = r.value_until_close(3)?;
    let pr = if r.next_is_context(4) {
        Some(u8::try_from(r.context_unsigned(4)?).map_err(|_| DecodeError::new("priority"))?)
    } else {
        None
    };
    Ok((o, PropRef { property, index }, v, pr))
}

/// SubscribeCOV request; `lifetime` None cancels the subscription.
pub fn subscribe_cov(process: u32, o: ObjectId, confirmed: bool, lifetime: Option<u32>) -> Vec<u8> {
    let mut w = Writer::new();
    w.context_unsigned(0, u64::from(process));
    w.context_object(1, o);
    if let Some(l) = lifetime {
        w.context_bool(2, confirmed);
        w.context_unsigned(3, u64::from(l));
    }
    w.buf
}

/// A COV notification.
#[derive(Debug, Clone, PartialEq)]
pub struct CovNotification {
    /// The subscriber process id.
    pub process: u32,
    /// The initiating device.
    pub device: ObjectId,
    /// The object that changed.
    pub object: ObjectId,
    /// Seconds left of the subscription.
    pub time_remaining: u32,
    /// The values sent.
    pub values: Vec<(PropRef, AppValue)>,
}

/// Encodes a COV notification (for tests).
pub fn cov_notification(n: &CovNotification) -> Vec<u8> {
    let mut w = Writer::new();
    w.context_unsigned(0, u64::from(n.process));
    w.context_object(1, n.device);
    w.context_object(2, n.object);
    w.context_unsigned(3, u64::from(n.time_remaining));
    w.open(4);
    for (p, v) in &n.values {
        w.context_unsigned(0, u64::from(p.property));
        if let Some(i) = p.index {
            w.context_unsigned(1, u64::from(i));
        }
        w.open(2);
        w.app(v);
        w.close(2);
    }
    w.close(4);
    w.buf
}

/// Decodes a COV notification (confirmed or unconfirmed).
pub fn decode_cov_notification(b: &[u8]) -> Result<CovNotification, DecodeError> {
    let mut r = Reader::new(b);
    let process = u32::try_from(r.context_unsigned(0)?).unwrap_or(u32::MAX);
    let device = r.context_object(1)?;
    let object = r.context_object(2)?;
    let time_remaining = u32::try_from(r.context_unsigned(3)?).unwrap_or(u32::MAX);
    r.open(4)?;
    let mut values = Vec::new();
    while !r.next_is_close(4) {
        let property = prop_id(r.context_unsigned(0)?)?;
        let index = if r.next_is_context(1) {
            Some(prop_id(r.context_unsigned(1)?)?)
        } else {
            None
        };
        r.open(2)?;
        let v = r.value_until_close(2)?;
        if r.next_is_context(3) {
            r.context(3)?;
        }
        values.push((PropRef { property, index }, v));
    }
    r.close(4)?;
    Ok(CovNotification {
        process,
        device,
        object,
        time_remaining,
        values,
    })
}

/// Error class and code names for messages (clause 21, the common ones).
pub fn error_text(class: u32, code: u32) -> String {
    let c = match class {
        0 => "device",
        1 => "object",
        2 => "property",
        3 => "resources",
        4 => "security",
        5 => "services",
        6 => "vt",
        7 => "communication",
        _ => "",
    };
    let k = match code {
        0 => "other",
        9 => "invalid-data-type",
        31 => "unknown-object",
        32 => "unknown-property",
        37 => "value-out-of-range",
        40 => "write-access-denied",
        42 => "invalid-array-index",
        44 => "not-cov-property",
        45 => "optional-functionality-not-supported",
        _ => "",
    };
    let c = if c.is_empty() {
        class.to_string()
    } else {
        c.into()
    };
    let k = if k.is_empty() {
        code.to_string()
    } else {
        k.into()
    };
    format!("{c}: {k}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const AV1: ObjectId = ObjectId {
        kind: 2,
        instance: 1,
    };
    const PV: PropRef = PropRef {
        property: 85,
        index: None,
    };

    #[test]
    fn who_is_and_i_am() {
        assert!(who_is(None).is_empty());
        assert_eq!(
            decode_who_is(&who_is(Some((5, 900)))).unwrap(),
            Some((5, 900))
        );
        let i = IAm {
            device: ObjectId::new(8, 999),
            max_apdu: 1476,
            segmentation: 0,
            vendor: 15,
        };
        assert_eq!(decode_i_am(&i_am(&i)).unwrap(), i);
        assert!(decode_i_am(&[0xc4, 0, 0]).is_err());
    }

    #[test]
    fn read_property_ack() {
        // What bacpypes3 answers for analog-value,1 present-value = 21.5.
        let ack = [
            0x0c, 0x00, 0x80, 0, 1, 0x19, 0x55, 0x3e, 0x44, 0x41, 0xac, 0, 0, 0x3f,
        ];
        let (o, p, v) = decode_read_property_ack(&ack).unwrap();
        assert_eq!((o, p, v), (AV1, PV, AppValue::Real(21.5)));
        assert_eq!(&read_property(AV1, PV)[..], &ack[..7]);
    }

    #[test]
    fn rpm_ack_values_and_errors() {
        let mut w = Writer::new();
        w.context_object(0, AV1);
        w.open(1);
        w.context_unsigned(2, 85);
        w.open(4);
        w.app(&AppValue::Real(1.5));
        w.close(4);
        w.context_unsigned(2, 9999);
        w.open(5);
        w.app(&AppValue::Enumerated(2));
        w.app(&AppValue::Enumerated(32));
        w.close(5);
        w.close(1);
        let r = decode_rpm_ack(&w.buf).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (AV1, PV, Ok(AppValue::Real(1.5))));
        assert_eq!(r[1].2, Err((2, 32)));
        assert_eq!(error_text(2, 32), "property: unknown-property");
        assert!(decode_rpm_ack(&w.buf[..w.buf.len() - 1]).is_err());
        let req = read_property_multiple(&[(
            AV1,
            vec![
                PV,
                PropRef {
                    property: 77,
                    index: None,
                },
            ],
        )]);
        assert_eq!(
            req,
            [0x0c, 0x00, 0x80, 0, 1, 0x1e, 0x09, 0x55, 0x09, 0x4d, 0x1f]
        );
    }

    #[test]
    fn write_and_cov() {
        let b = write_property(AV1, PV, &AppValue::Real(7.75), Some(8));
        assert_eq!(
            decode_write_property(&b).unwrap(),
            (AV1, PV, AppValue::Real(7.75), Some(8))
        );
        let n = CovNotification {
            process: 3,
            device: ObjectId::new(8, 999),
            object: AV1,
            time_remaining: 250,
            values: vec![
                (PV, AppValue::Real(22.0)),
                (
                    PropRef {
                        property: 111,
                        index: None,
                    },
                    AppValue::Bits(vec![false; 4]),
                ),
            ],
        };
        assert_eq!(decode_cov_notification(&cov_notification(&n)).unwrap(), n);
        let s = subscribe_cov(3, AV1, true, Some(300));
        assert_eq!(
            s,
            [0x09, 3, 0x1c, 0x00, 0x80, 0, 1, 0x29, 1, 0x3a, 0x01, 0x2c]
        );
    }
}
