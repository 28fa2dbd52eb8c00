//! DBC files (beyond upstream): messages and their signals, read with the `can-dbc` crate at
//! configuration time, and a signal's value decoded from a frame (Intel and Motorola bit
//! order, signed and unsigned, IEEE float/double via `SIG_VALTYPE_`, scaling `factor` and
//! `offset`, simple multiplexing).
//!
//! Crate choice: `can-dbc` 10 (oxibus, maintained, MIT/Apache-2.0, MSRV 1.83). It parses with
//! a `pest` grammar; its build adds `pest`, `pest_derive`/`pest_generator`/`pest_meta`,
//! `can-dbc-pest` and `stacker` (a clean build of these took about 15 s of CPU here). It is
//! only a parser; the bit extraction below is ours (short, checked, fuzzed with the rest of
//! frame decoding).

use std::path::Path;

use tbgw::eval::Val;

/// One signal of a DBC message.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The signal's name.
    pub name: String,
    /// DBC start bit (Intel: the least significant bit; Motorola: the most significant).
    pub start_bit: u32,
    /// Bits (1 ..= 64).
    pub size: u32,
    /// Intel (little-endian) bit order.
    pub little_endian: bool,
    /// Two's complement.
    pub signed: bool,
    /// IEEE float of 32 or 64 bits (`SIG_VALTYPE_`), else integer.
    pub float: Option<u32>,
    /// Physical = raw × factor + offset.
    pub factor: f64,
    /// See `factor`.
    pub offset: f64,
    /// Unit text (may be empty).
    pub unit: String,
    /// Decoded only when the message's multiplexer has this value.
    pub mux: Option<u64>,
    /// This signal is the message's multiplexer.
    pub is_mux: bool,
}

/// One message of a DBC file.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The message's name.
    pub name: String,
    /// Arbitration id.
    pub id: u32,
    /// 29-bit id.
    pub extended: bool,
    /// Its signals.
    pub signals: Vec<Signal>,
}

/// Reads a DBC file.
pub fn load(path: &Path) -> Result<Vec<Message>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // DBC files are often Windows-1252: keep ASCII, map other bytes one to one.
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    };
    parse(&text)
}

/// Parses DBC text.
pub fn parse(text: &str) -> Result<Vec<Message>, String> {
    let dbc = can_dbc::Dbc::try_from(text).map_err(|e| format!("not a DBC file: {e}"))?;
    let mut out = Vec::new();
    for m in &dbc.messages {
        let (id, extended) = match m.id {
            can_dbc::MessageId::Standard(i) => (u32::from(i), false),
            can_dbc::MessageId::Extended(i) => (i, true),
        };
        let mut signals = Vec::new();
        for s in &m.signals {
            if s.size == 0 || s.size > 64 || s.start_bit >= 8 * 1785 {
                return Err(format!(
                    "message {} signal {}: start bit {} size {} do not fit a frame",
                    m.name, s.name, s.start_bit, s.size
                ));
            }
            let float = match dbc.extended_value_type_for_signal(m.id, &s.name) {
                Some(can_dbc::SignalExtendedValueType::IEEEfloat32Bit) => Some(32),
                Some(can_dbc::SignalExtendedValueType::IEEEdouble64bit) => Some(64),
                _ => None,
            };
            let (mux, is_mux) = match s.multiplexer_indicator {
                can_dbc::MultiplexIndicator::Multiplexor => (None, true),
                can_dbc::MultiplexIndicator::MultiplexedSignal(v) => (Some(v), false),
                can_dbc::MultiplexIndicator::MultiplexorAndMultiplexedSignal(v) => (Some(v), true),
                _ => (None, false),
            };
            signals.push(Signal {
                name: s.name.clone(),
                start_bit: s.start_bit as u32,
                size: s.size as u32,
                little_endian: s.byte_order == can_dbc::ByteOrder::LittleEndian,
                signed: s.value_type == can_dbc::ValueType::Signed,
                float,
                factor: s.factor,
                offset: s.offset,
                unit: s.unit.clone(),
                mux,
                is_mux,
            });
        }
        out.push(Message {
            name: m.name.clone(),
            id,
            extended,
            signals,
        });
    }
    Ok(out)
}

/// The raw bits of a signal, `None` when the frame is too short.
pub fn raw_bits(data: &[u8], start_bit: u32, size: u32, little_endian: bool) -> Option<u64> {
    if size == 0 || size > 64 {
        return None;
    }
    let mut v: u64 = 0;
    if little_endian {
        for i in 0..size {
            let bit = start_bit + i;
            let byte = *data.get((bit / 8) as usize)?;
            v |= u64::from((byte >> (bit % 8)) & 1) << i;
        }
    } else {
        // Motorola: start at the most significant bit, walk down within a byte, then to
        // bit 7 of the next byte.
        let mut pos = start_bit;
        for _ in 0..size {
            let byte = *data.get((pos / 8) as usize)?;
            v = (v << 1) | u64::from((byte >> (pos % 8)) & 1);
            if pos.is_multiple_of(8) {
                pos = (pos / 8 + 1) * 8 + 7;
            } else {
                pos -= 1;
            }
        }
    }
    Some(v)
}

impl Signal {
    /// The unscaled value.
    fn raw(&self, data: &[u8]) -> Result<Val, String> {
        let bits =
            raw_bits(data, self.start_bit, self.size, self.little_endian).ok_or_else(|| {
                format!(
                    "signal {} (bits {}+{}) is beyond the frame's {} data bytes",
                    self.name,
                    self.start_bit,
                    self.size,
                    data.len()
                )
            })?;
        Ok(match self.float {
            Some(32) => Val::Float(f64::from(f32::from_bits(bits as u32))),
            Some(_) => Val::Float(f64::from_bits(bits)),
            None if self.signed && self.size < 64 => {
                let shift = 64 - self.size;
                Val::Int(((bits << shift) as i64) >> shift)
            }
            None if self.signed => Val::Int(bits as i64),
            None => match i64::try_from(bits) {
                Ok(i) => Val::Int(i),
                Err(_) => Val::Float(bits as f64),
            },
        })
    }

    /// The physical value: an integer when the signal is an unscaled integer, else a float.
    pub fn decode(&self, data: &[u8]) -> Result<Val, String> {
        let raw = self.raw(data)?;
        if self.factor == 1.0 && self.offset == 0.0 {
            return Ok(raw);
        }
        let x = match raw {
            Val::Int(i) => i as f64,
            Val::Float(f) => f,
            other => return Ok(other),
        };
        Ok(Val::Float(x * self.factor + self.offset))
    }
}

impl Message {
    /// The multiplexer's value in `data`, if the message has one.
    pub fn mux_value(&self, data: &[u8]) -> Option<u64> {
        let m = self.signals.iter().find(|s| s.is_mux)?;
        raw_bits(data, m.start_bit, m.size, m.little_endian)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DBC: &str = r#"VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 2364540158 EEC1: 8 ECU
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
 SG_ Torque : 8|8@1- (1,-125) [-125|125] "%" Vector__XXX

BO_ 256 Motorola: 8 ECU
 SG_ Temp : 7|12@0+ (0.1,-40) [-40|200] "degC" Vector__XXX
 SG_ Level : 23|8@0- (1,0) [-128|127] "" Vector__XXX

BO_ 512 Muxed: 8 ECU
 SG_ Page M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ A m0 : 8|16@1+ (1,0) [0|65535] "" Vector__XXX
 SG_ B m1 : 8|16@1+ (1,0) [0|65535] "" Vector__XXX

BO_ 513 Floats: 8 ECU
 SG_ F : 0|32@1- (1,0) [0|0] "V" Vector__XXX

SIG_VALTYPE_ 513 F : 1;
"#;

    #[test]
    fn signals_decode_with_scaling_order_sign_mux_and_float() {
        let msgs = parse(DBC).unwrap();
        let eec1 = &msgs[0];
        assert_eq!((eec1.id, eec1.extended), (0x0CF0_04FE, true));
        let speed = &eec1.signals[0];
        assert_eq!(speed.unit, "rpm");
        // 1000 rpm = 8000 raw, little-endian at byte 3.
        let d = [0, 0xFA, 0, 0x40, 0x1F, 0, 0, 0];
        assert_eq!(speed.decode(&d), Ok(Val::Float(1000.0)));
        assert_eq!(eec1.signals[1].decode(&d), Ok(Val::Float(-131.0)));
        let moto = &msgs[1];
        // Temp: 12 bits from bit 7 down: 0x3E8 = 1000 → 100.0 - 40 = 60.0.
        let d = [0x3E, 0x80, 0xFE, 0, 0, 0, 0, 0];
        assert!(matches!(moto.signals[0].decode(&d), Ok(Val::Float(t)) if (t - 60.0).abs() < 1e-9));
        assert_eq!(moto.signals[1].decode(&d), Ok(Val::Int(-2)));
        let mux = &msgs[2];
        assert_eq!(mux.mux_value(&[1, 2, 0]), Some(1));
        assert_eq!(mux.signals[2].mux, Some(1));
        let fl = &msgs[3];
        assert_eq!(fl.signals[0].float, Some(32));
        let mut d = 12.5f32.to_le_bytes().to_vec();
        d.extend([0; 4]);
        assert_eq!(fl.signals[0].decode(&d), Ok(Val::Float(12.5)));
        assert!(fl.signals[0].decode(&[1, 2]).is_err());
    }

    #[test]
    fn a_broken_file_is_an_error() {
        assert!(parse("BO_ x y z").is_err());
    }
}
