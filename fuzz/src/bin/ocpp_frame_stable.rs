//! The `ocpp_frame` fuzz target without libFuzzer, on stable Rust: random inputs (most of them
//! mutated well-formed OCPP-J frames) for a number of seconds, or replay of files.
//!
//! ```text
//! cargo run --release --no-default-features --bin ocpp_frame_stable -- 60
//! cargo run --release --no-default-features --bin ocpp_frame_stable -- artifacts/ocpp_frame/crash-*
//! ```

use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(secs) = args.first().and_then(|a| a.parse::<u64>().ok()) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut runs = 0u64;
        while Instant::now() < end {
            for _ in 0..1000 {
                let input = if rng.below(4) != 0 {
                    mutated(&mut rng)
                } else {
                    (0..rng.below(200)).map(|_| rng.next() as u8).collect()
                };
                tbgw_fuzz::ocpp_frame(&input);
                runs += 1;
            }
        }
        println!("ocpp_frame: {runs} inputs in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        tbgw_fuzz::ocpp_frame(&data);
        println!("{path}: ok");
    }
}
