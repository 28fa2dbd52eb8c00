//! Comparing values (ON_CHANGE) and aggregating them over a report period.

use crate::config::AggregationFunction;
use crate::model::Value;

/// Two numbers closer than this are the same value for ON_CHANGE (upstream's tolerance).
pub(crate) const FLOAT_TOLERANCE: f64 = 0.001;

/// True when `new` differs from `old` for ON_CHANGE.
///
/// Two integers are compared exactly. When either side is a float, both are compared as
/// numbers with [`FLOAT_TOLERANCE`] (`1` and `1.0004` are the same value); two NaNs are the
/// same value. Every other pair is compared by type and content: `"1"`, `1` and `true` all
/// differ from each other.
pub(crate) fn changed(old: &Value, new: &Value) -> bool {
    match (old, new) {
        (Value::Int(a), Value::Int(b)) => a != b,
        (Value::Float(_), Value::Float(_) | Value::Int(_)) | (Value::Int(_), Value::Float(_)) => {
            let (a, b) = (
                as_f64(old).unwrap_or(f64::NAN),
                as_f64(new).unwrap_or(f64::NAN),
            );
            if a.is_nan() || b.is_nan() {
                return a.is_nan() != b.is_nan();
            }
            (a - b).abs() > FLOAT_TOLERANCE
        }
        _ => old != new,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A number seen during a period, kept in its own type so integer results stay integers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Running aggregates of the values received during one report period: constant size,
/// whatever the number of values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accumulator {
    /// Values of any type.
    count: u64,
    /// Numeric values (integers and non-NaN floats).
    numeric: u64,
    /// Every numeric value was an integer.
    floats_seen: bool,
    /// Exact integer sum while every value is an integer and the sum fits in an `i64`.
    int_sum: Option<i64>,
    /// Sum as a float (always kept, used once a float or an overflow appears).
    float_sum: f64,
    min: Option<Num>,
    max: Option<Num>,
}

impl Accumulator {
    /// True when no value arrived since the last reset.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets every value (start of a new period).
    pub(crate) fn reset(&mut self) {
        *self = Accumulator::default();
    }

    /// Adds one received value. Booleans, strings and JSON count for COUNT only.
    pub(crate) fn add(&mut self, v: &Value) {
        self.count += 1;
        let n = match v {
            Value::Int(i) => Num::Int(*i),
            Value::Float(f) if !f.is_nan() => Num::Float(*f),
            _ => return,
        };
        if self.numeric == 0 {
            self.int_sum = Some(0);
        }
        self.numeric += 1;
        match n {
            Num::Int(i) => self.int_sum = self.int_sum.and_then(|s| s.checked_add(i)),
            Num::Float(_) => self.floats_seen = true,
        }
        self.float_sum += n.f();
        if self.min.is_none_or(|m| n.f() < m.f()) {
            self.min = Some(n);
        }
        if self.max.is_none_or(|m| n.f() > m.f()) {
            self.max = Some(n);
        }
    }

    /// The aggregate of the period, or `None` when `f` has nothing to work on: no value at
    /// all, or (SUM, MIN, MAX, AVERAGE) no numeric value. [`AggregationFunction::None`]
    /// gives `None` too: the caller sends the latest value itself.
    pub(crate) fn result(&self, f: AggregationFunction) -> Option<Value> {
        if self.count == 0 {
            return None;
        }
        let out = |n: Num| -> Value {
            match n {
                Num::Int(i) if !self.floats_seen => Value::Int(i),
                other => Value::Float(other.f()),
            }
        };
        match f {
            AggregationFunction::None => None,
            AggregationFunction::Count => Some(Value::Int(self.count as i64)),
            _ if self.numeric == 0 => None,
            AggregationFunction::Sum => Some(match (self.floats_seen, self.int_sum) {
                (false, Some(s)) => Value::Int(s),
                _ => Value::Float(self.float_sum),
            }),
            AggregationFunction::Min => self.min.map(out),
            AggregationFunction::Max => self.max.map(out),
            AggregationFunction::Average => {
                Some(Value::Float(self.float_sum / self.numeric as f64))
            }
        }
    }
}
