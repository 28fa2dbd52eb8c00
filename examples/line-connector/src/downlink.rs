//! Gateway requests to device commands: the downlink converter.
//!
//! ```text
//! SET 12 setpoint 21.5          shared attribute `setpoint` changed in ThingsBoard
//! CALL 13 reboot {"delay":5}    RPC `reboot` with its params as JSON
//! ACK 17                        reading #17 is stored; the device may forget it
//! ```
//!
//! Every command carries an id; the device answers `OK <id> [json]` or `ERR <id> text`
//! (parsed in [`uplink`](crate::uplink)). Values and params are compact JSON, so they never
//! hold a line break.

use serde_json::Value as Json;

/// The command for a changed shared attribute.
pub fn set_command(id: u64, key: &str, value: &Json) -> String {
    format!("SET {id} {key} {value}\n")
}

/// The command for an RPC.
pub fn call_command(id: u64, method: &str, params: &Json) -> String {
    if params.is_null() {
        format!("CALL {id} {method}\n")
    } else {
        format!("CALL {id} {method} {params}\n")
    }
}

/// The acknowledgement of a stored reading.
pub fn ack_command(seq: u64) -> String {
    format!("ACK {seq}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_are_one_line_each() {
        assert_eq!(set_command(1, "sp", &json!("a\nb")), "SET 1 sp \"a\\nb\"\n");
        assert_eq!(
            call_command(2, "reboot", &json!({"delay": 5})),
            "CALL 2 reboot {\"delay\":5}\n"
        );
        assert_eq!(call_command(3, "ping", &Json::Null), "CALL 3 ping\n");
        assert_eq!(ack_command(17), "ACK 17\n");
    }
}
