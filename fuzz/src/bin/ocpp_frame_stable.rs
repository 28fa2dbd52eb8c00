//! The `ocpp_frame` fuzz target without libFuzzer, on stable Rust: random inputs (most of them
//! mutated well-formed OCPP-J frames) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin ocpp_frame_stable -- 60
//! cargo run --release --no-default-features --bin ocpp_frame_stable -- artifacts/ocpp_frame/crash-*
//! ```

use tbgw_fuzz::stable::{run, Rng};

const SEEDS: [&str; 10] = [
    r#"[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]"#,
    r#"[2,"2","BootNotification",{"chargingStation":{"vendorName":"V","model":"M"},"reason":"PowerUp"}]"#,
    r#"[2,"3","MeterValues",{"evseId":1,"meterValue":[{"timestamp":"2026-01-01T00:00:00Z","sampledValue":[{"value":1.5,"measurand":"SoC"}]}]}]"#,
    r#"[2,"4","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"x","sampledValue":[{"value":"1"}]}]}]"#,
    r#"[2,"5","TransactionEvent",{"eventType":"Started","timestamp":"2026-01-01T00:00:00Z","triggerReason":"Authorized","seqNo":0,"transactionInfo":{"transactionId":"T"},"idToken":{"idToken":"A","type":"ISO14443"}}]"#,
    r#"[2,"6","DataTransfer",{"vendorId":"v","data":"{\"temp\":21}"}]"#,
    r#"[2,"7","Authorize",{"idTag":"A"}]"#,
    r#"[3,"8",{"status":"Accepted"}]"#,
    r#"[4,"9","NotImplemented","",{}]"#,
    r#"[6,"10","NotifyPeriodicEventStream",{}]"#,
];

fn mutated(rng: &mut Rng) -> Vec<u8> {
    let mut input = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
    for _ in 0..rng.below(4) {
        if input.is_empty() {
            break;
        }
        let i = rng.below(input.len());
        match rng.below(4) {
            0 => input[i] ^= 1 << rng.below(8),
            1 => {
                input.remove(i);
            }
            2 => {
                const BYTES: &[u8] = b"[]{}\",:0a-";
                input.insert(i, BYTES[rng.below(BYTES.len())]);
            }
            _ => input.truncate(i),
        }
    }
    input
}

fn main() {
    run("ocpp_frame", tbgw_fuzz::ocpp_frame, |rng| {
        rng.mix(3, 4, mutated, 200)
    });
}
