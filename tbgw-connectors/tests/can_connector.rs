//! The CAN connector against the in-process fake CAN network (this machine's kernel has no
//! CAN: no `vcan`, no `AF_CAN`), and against a real `vcan0` when one exists (create it with
//! `sudo ip link add dev vcan0 type vcan && sudo ip link set vcan0 up`; the tests print that
//! they skip otherwise).
//!
//! The fake behaves like SocketCAN where the connector can tell (see
//! `tbgw_connectors::can::fake`): devices here are test tasks on their own sockets of the same
//! network, answering polls with frames, going quiet, losing frames, and the interface going
//! down and up again.
#![cfg(feature = "can")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::connector::{Connector, ConnectorSpec};
use tbgw::model::Value;
use tbgw::test_util::harness::forward_up;
use tbgw::test_util::{TestRun, Up};
use tbgw_connectors::can::fake::{FakeCan, FakeSocket};
use tbgw_connectors::can::{CanBus, CanBusOpener, CanFactory, CanFrame};

const WAIT: Duration = Duration::from_secs(10);

fn spec(config: Json, file: &Path) -> ConnectorSpec {
    ConnectorSpec {
        name: "CAN".into(),
        connector_type: "can".into(),
        file: file.to_path_buf(),
        config: config.into(),
    }
}

/// The running connector; what it sent arrives in order, store receipts unanswered.
type Running = TestRun<Up>;

fn start_with(config: Json, file: &Path, opener: Arc<dyn CanBusOpener>) -> (Running, Vec<String>) {
    let mut ignored = Vec::new();
    let connector = CanFactory::new()
        .build_can(&spec(config, file), &mut ignored)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_opener(opener);
    let run = TestRun::start("CAN", Box::new(connector), WAIT, |uplink, tx| {
        forward_up(uplink, tx, false)
    });
    (run, ignored)
}

fn start(config: Json, net: &FakeCan) -> Running {
    start_with(config, Path::new("can.json"), Arc::new(net.clone())).0
}

async fn recv(sock: &mut FakeSocket) -> CanFrame {
    tokio::time::timeout(WAIT, sock.recv())
        .await
        .expect("a frame")
        .expect("bus up")
}

fn frame(id: u32, extended: bool, data: &[u8]) -> CanFrame {
    CanFrame::new(id, extended, false, false, data.to_vec()).unwrap()
}

/// A car like upstream's sample: the door attribute polled once, rpm polled every 0.05 s,
/// mileage on the same id without a command.
fn car(channel: &str) -> Json {
    json!({
        "interface": "socketcan", "channel": channel, "backend": {"fd": true},
        "reconnectPeriod": 0.05,
        "devices": [{
            "name": "Car", "type": "car", "enableUnknownRpc": false, "overrideRpcConfig": false,
            "attributes": [{
                "key": "isDriverDoorOpened", "nodeId": 41, "command": "2:2:big:8717",
                "value": "4:1:int", "expression": "bool(value & 0b00000100)",
                "polling": {"type": "once", "dataInHex": "AB CD AB CD"}
            }],
            "timeseries": [
                {"key": "rpm", "nodeId": 1918, "isExtendedId": true, "command": "2:2:big:48059",
                 "value": "4:2:big:int", "expression": "value / 4",
                 "polling": {"type": "always", "period": 0.05, "dataInHex": "aaaa bbbb aaaa bbbb"}},
                {"key": "milliage", "nodeId": 1918, "isExtendedId": true,
                 "value": "4:2:little:int", "expression": "value * 10"}
            ],
            "attributeUpdates": [{"attributeOnThingsBoard": "softwareVersion", "nodeId": 64,
                "isExtendedId": true, "dataLength": 4, "dataExpression": "value + 5",
                "dataByteorder": "little"}],
            "serverSideRpc": [
                {"method": "sendSameData", "nodeId": 4, "isExtendedId": true, "isFd": true,
                 "bitrateSwitch": true, "dataInHex": "aa bb cc dd ee ff    aa bb aa bb cc d ee ff"},
                {"method": "setLightLevel", "nodeId": 5, "dataLength": 2, "dataByteorder": "little",
                 "dataBefore": "00AA"},
                {"method": "setSpeed", "nodeId": 16, "dataAfter": "0102",
                 "dataExpression": "userSpeed if maxAllowedSpeed > userSpeed else maxAllowedSpeed"},
                {"method": "sendFd", "nodeId": 17, "isFd": true, "bitrateSwitch": true,
                 "dataInHex": "00 01 02 03 04 05 06 07 08 09"}
            ]
        }]
    })
}

/// The car's ECU: answers each rpm poll with the next rpm, the door poll with the door state.
fn ecu(mut sock: FakeSocket, mut rpm: u16) -> tokio::task::JoinHandle<FakeSocket> {
    tokio::spawn(async move {
        loop {
            let f = match tokio::time::timeout(Duration::from_millis(500), sock.recv()).await {
                Ok(Ok(f)) => f,
                _ => return sock,
            };
            let answer = match (f.id, f.extended) {
                (1918, true) if f.data.first() == Some(&0xAA) => {
                    rpm = rpm.wrapping_add(4);
                    let r = rpm.to_be_bytes();
                    frame(1918, true, &[0, 0, 0xBB, 0xBB, r[0], r[1]])
                }
                (41, false) if f.data.first() == Some(&0xAB) => {
                    frame(41, false, &[0, 0, 0x22, 0x0D, 0x04])
                }
                _ => continue,
            };
            if sock.send(&answer).await.is_err() {
                return sock;
            }
        }
    })
}

#[tokio::test]
async fn polled_values_arrive_typed_with_expressions_and_commands() {
    let net = FakeCan::new();
    net.add_interface("can0", true);
    let mut ecu_sock = net.socket("can0", true).unwrap();
    let mut run = start(car("can0"), &net);
    assert!(matches!(run.next().await, Up::Connect(d) if d == "Car"));
    // The once-poll and the first always-poll, as upstream sends them.
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(recv(&mut ecu_sock).await);
    }
    assert!(seen
        .iter()
        .any(|f| f.id == 41 && !f.extended && f.data == [0xAB, 0xCD, 0xAB, 0xCD]));
    assert!(seen.iter().any(|f| f.id == 1918
        && f.extended
        && f.data == [0xAA, 0xAA, 0xBB, 0xBB, 0xAA, 0xAA, 0xBB, 0xBB]));
    let ecu_task = ecu(ecu_sock, 400);
    // The door: a one-time poll, answered once the ECU listens; answer it by hand.
    let mut dev = net.socket("can0", true).unwrap();
    dev.send(&frame(41, false, &[0, 0, 0x22, 0x0D, 0x04]))
        .await
        .unwrap();
    assert_eq!(
        run.value_of("Car", "isDriverDoorOpened").await,
        Value::Bool(true)
    );
    dev.send(&frame(41, false, &[0, 0, 0x22, 0x0D, 0x00]))
        .await
        .unwrap();
    assert_eq!(
        run.value_of("Car", "isDriverDoorOpened").await,
        Value::Bool(false)
    );
    // rpm from the answers to the periodic poll (upstream would never report it: the
    // mileage entry without a command switches the command filter off in upstream).
    let Value::Float(r1) = run.value_of("Car", "rpm").await else {
        panic!("rpm is a float")
    };
    let Value::Float(r2) = run.value_of("Car", "rpm").await else {
        panic!("rpm is a float")
    };
    assert!(r2 > r1 && r1 >= 101.0, "{r1} {r2}");
    // Mileage rides on every frame of 1918, little-endian.
    dev.send(&frame(1918, true, &[9, 9, 9, 9, 0x10, 0x00]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let Up::Data(d) = run.next().await else {
            continue;
        };
        if let (Some(m), None) = (d.value("milliage"), d.value("rpm")) {
            assert_eq!(m, Value::Int(160));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    // A frame of another id, a frame of the right id but the other id kind: ignored.
    dev.send(&frame(1919, true, &[0; 8])).await.unwrap();
    dev.send(&frame(41, true, &[0, 0, 0x22, 0x0D, 0x04]))
        .await
        .unwrap();
    // Too short for the door's value: counted, the connector goes on.
    let before = run.stats.stats().convert_errors();
    dev.send(&frame(41, false, &[0, 0, 0x22, 0x0D]))
        .await
        .unwrap();
    dev.send(&frame(41, false, &[0, 0, 0x22, 0x0D, 0x04]))
        .await
        .unwrap();
    assert_eq!(
        run.value_of("Car", "isDriverDoorOpened").await,
        Value::Bool(true)
    );
    assert_eq!(run.stats.stats().convert_errors(), before + 1);
    assert_eq!(net.opens(), 1);
    run.stop().await;
    let _ = ecu_task.await;
}

#[tokio::test]
async fn rpcs_and_attribute_updates_become_frames() {
    let net = FakeCan::new();
    net.add_interface("can0", true);
    let mut dev = net.socket("can0", true).unwrap();
    let mut run = start(car("can0"), &net);
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    // setLightLevel: dataBefore + 2 bytes little-endian.
    let r = run.rpc("Car", "setLightLevel", json!({"value": 258})).await;
    assert_eq!(r, json!({"success": true}));
    let f = next_not_poll(&mut dev).await;
    assert_eq!(
        (f.id, f.extended, f.data.clone()),
        (5, false, vec![0x00, 0xAA, 0x02, 0x01])
    );
    // setSpeed: the expression over the params, then dataAfter.
    let r = run
        .rpc(
            "Car",
            "setSpeed",
            json!({"userSpeed": 50, "maxAllowedSpeed": 40}),
        )
        .await;
    assert_eq!(r, json!({"success": true}));
    let f = next_not_poll(&mut dev).await;
    assert_eq!((f.id, f.data.clone()), (16, vec![40, 1, 2]));
    // A parameter the expression needs is missing: 400 naming it.
    let r = run.rpc("Car", "setSpeed", json!({"userSpeed": 50})).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("maxAllowedSpeed"),
        "{r}"
    );
    // Upstream's sample RPC with broken hex: a clear error, nothing sent.
    let r = run.rpc("Car", "sendSameData", json!({})).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not hex"), "{r}");
    // A CAN FD frame with the bit rate switch, padded to a valid FD length.
    let r = run.rpc("Car", "sendFd", json!({})).await;
    assert_eq!(r, json!({"success": true}));
    let f = next_not_poll(&mut dev).await;
    assert!(f.fd && f.brs && f.id == 17);
    assert_eq!(f.data.len(), 12);
    // Unknown method: enableUnknownRpc is off.
    let r = run.rpc("Car", "nope", json!({})).await;
    assert_eq!(r["code"], 404, "{r}");
    // Reserved set in upstream's text form.
    let r = run
        .rpc(
            "Car",
            "set",
            json!("nodeId=300;isExtendedId=true;value=7;dataLength=2"),
        )
        .await;
    assert_eq!(r, json!({"result": {"success": true}}));
    let f = next_not_poll(&mut dev).await;
    assert_eq!((f.id, f.extended, f.data.clone()), (300, true, vec![0, 7]));
    // Attribute update: value + 5, 4 bytes little-endian, extended id 64.
    run.update("Car", "softwareVersion", json!(1)).await;
    let f = next_not_poll(&mut dev).await;
    assert_eq!(
        (f.id, f.extended, f.data.clone()),
        (64, true, vec![6, 0, 0, 0])
    );
    // An attribute nobody configured: nothing sent, nothing breaks.
    run.update("Car", "other", json!(1)).await;
    let r = run.rpc("Car", "setLightLevel", json!({"value": 1})).await;
    assert_eq!(r, json!({"success": true}));
    let f = next_not_poll(&mut dev).await;
    assert_eq!(f.id, 5);
    run.stop().await;
}

/// The next frame that is not one of the car's polls.
async fn next_not_poll(dev: &mut FakeSocket) -> CanFrame {
    loop {
        let f = recv(dev).await;
        if !((f.id == 1918 && f.extended) || (f.id == 41 && !f.extended)) {
            return f;
        }
    }
}

#[tokio::test]
async fn unknown_rpcs_with_override_describe_their_own_frame() {
    let net = FakeCan::new();
    net.add_interface("can0", false);
    let mut dev = net.socket("can0", false).unwrap();
    let cfg = json!({"channel": "can0", "devices": [{"name": "Lamp", "enableUnknownRpc": true,
        "serverSideRpc": [{"method": "dim", "nodeId": 7, "dataLength": 1}]}]});
    let mut run = start(cfg, &net);
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    let r = run
        .rpc(
            "Lamp",
            "anything",
            json!({"nodeId": 9, "value": 513, "dataLength": 2, "dataByteorder": "little"}),
        )
        .await;
    assert_eq!(r, json!({"success": true}));
    let f = recv(&mut dev).await;
    assert_eq!((f.id, f.data.clone()), (9, vec![1, 2]));
    // Params override the configured entry.
    let r = run
        .rpc("Lamp", "dim", json!({"value": 300, "dataLength": 2}))
        .await;
    assert_eq!(r, json!({"success": true}));
    assert_eq!(recv(&mut dev).await.data, [1, 44]);
    // An FD frame on a classic bus: refused by the bus, 500, the bus stays open.
    let r = run
        .rpc(
            "Lamp",
            "anything",
            json!({"nodeId": 9, "isFd": true, "dataInHex": "01"}),
        )
        .await;
    assert_eq!(r["code"], 500, "{r}");
    let r = run.rpc("Lamp", "anything", json!({"value": 1})).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("nodeId"), "{r}");
    assert_eq!(net.opens(), 1);
    run.stop().await;
}

#[tokio::test]
async fn the_interface_going_down_and_up_is_survived() {
    let net = FakeCan::new();
    net.add_interface("can0", true);
    let mut run = start(car("can0"), &net);
    run.wait_for(|u| matches!(u, Up::Connect(d) if d == "Car"))
        .await;
    let ecu_task = ecu(net.socket("can0", true).unwrap(), 0);
    run.value_of("Car", "rpm").await;
    net.set_up("can0", false);
    run.wait_for(|u| matches!(u, Up::Disconnect(d) if d == "Car"))
        .await;
    // While the bus is closed: RPCs are answered at once with 503.
    let r = run.rpc("Car", "setLightLevel", json!({"value": 1})).await;
    assert_eq!(r["code"], 503, "{r}");
    let errors = run.stats.stats().errors();
    assert!(errors >= 1);
    // An attribute update meanwhile: kept (the latest one) and written when the bus is back.
    run.update("Car", "softwareVersion", json!(1)).await;
    run.update("Car", "softwareVersion", json!(2)).await;
    // Attempts fail while it is down; then it comes back and so does the data.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = ecu_task.await;
    net.set_up("can0", true);
    let mut listener = net.socket("can0", true).unwrap();
    run.wait_for(|u| matches!(u, Up::Connect(d) if d == "Car"))
        .await;
    let f = next_not_poll(&mut listener).await;
    assert_eq!(
        (f.id, f.extended, f.data.clone()),
        (64, true, vec![7, 0, 0, 0])
    );
    drop(listener);
    let ecu_task = ecu(net.socket("can0", true).unwrap(), 0);
    run.value_of("Car", "rpm").await;
    assert_eq!(net.opens(), 2, "one open before, one after: no flapping");
    run.stop().await;
    let _ = ecu_task.await;
}

#[tokio::test]
async fn a_device_that_goes_quiet_and_lost_frames_do_not_disturb_the_bus() {
    let net = FakeCan::new();
    net.add_interface("can0", true);
    net.set_bitrate("can0", 500_000);
    let mut run = start(car("can0"), &net);
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    let ecu_task = ecu(net.socket("can0", true).unwrap(), 0);
    run.value_of("Car", "rpm").await;
    // The ECU is unplugged: no answers, no data, but the bus stays open and polls go on.
    ecu_task.abort();
    let _ = ecu_task.await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), run.up.recv()).await {}
    let mut listener = net.socket("can0", true).unwrap();
    let poll = recv(&mut listener).await;
    assert_eq!((poll.id, poll.extended), (1918, true));
    drop(listener);
    // It comes back on a lossy bus: every third frame is lost, the rest is decoded.
    net.drop_every("can0", 3);
    let received = run.stats.stats().messages_received();
    let ecu_task = ecu(net.socket("can0", true).unwrap(), 1000);
    let Value::Float(first) = run.value_of("Car", "rpm").await else {
        panic!()
    };
    let Value::Float(later) = run.value_of("Car", "rpm").await else {
        panic!()
    };
    assert!(later > first);
    assert!(run.stats.stats().messages_received() > received);
    assert!(net.lost("can0").0 > 0);
    assert_eq!(net.opens(), 1);
    run.stop().await;
    let _ = ecu_task.await;
}

#[tokio::test]
async fn a_missing_interface_is_retried_reconnect_count_times_then_left_alone() {
    let net = FakeCan::new();
    let cfg = json!({"channel": "can9", "reconnectPeriod": 0.01, "reconnectCount": 2,
        "devices": [{"name": "X", "timeseries": [{"key": "k", "nodeId": 1, "value": "0:1:int"}],
                     "serverSideRpc": [{"method": "m", "nodeId": 1, "dataInHex": "01"}]}]});
    let run = start(cfg, &net);
    // Three failed opens (the first and two reconnects), then it stays idle.
    let deadline = tokio::time::Instant::now() + WAIT;
    while run.stats.stats().errors() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "three attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run.stats.stats().errors(), 3);
    let r = run.rpc("X", "m", json!({})).await;
    assert_eq!(r["code"], 503, "{r}");
    run.stop().await;
}

#[tokio::test]
async fn dbc_signals_are_decoded_by_name_with_scaling_and_units() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("truck.dbc"),
        r#"VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 2364540158 EEC1: 8 ECU
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
 SG_ EngineTorque : 8|8@1- (1,-125) [-125|125] "%" Vector__XXX

BO_ 512 Body: 8 ECU
 SG_ Door : 0|1@1+ (1,0) [0|1] "" Vector__XXX
"#,
    )
    .unwrap();
    let file = dir.path().join("can.json");
    let cfg = json!({"channel": "can0", "devices": [{"name": "Truck", "dbcFile": "truck.dbc",
        "dbcMessages": ["EEC1"],
        "attributes": [{"key": "door", "signal": "Door"}]}]});
    let net = FakeCan::new();
    net.add_interface("can0", false);
    let (mut run, _) = start_with(cfg, &file, Arc::new(net.clone()));
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    // The units, once per connection.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Up::Data(d) = run.next().await {
            if let Some(u) = d.value("EngineSpeed_unit") {
                assert_eq!(u, Value::String("rpm".into()));
                assert_eq!(
                    d.value("EngineTorque_unit"),
                    Some(Value::String("%".into()))
                );
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    let mut dev = net.socket("can0", false).unwrap();
    dev.send(&frame(0x0CF0_04FE, true, &[0, 135, 0, 0x40, 0x1F, 0, 0, 0]))
        .await
        .unwrap();
    assert_eq!(
        run.value_of("Truck", "EngineSpeed").await,
        Value::Float(1000.0)
    );
    dev.send(&frame(0x0CF0_04FE, true, &[0, 127, 0, 0x40, 0x1F, 0, 0, 0]))
        .await
        .unwrap();
    assert_eq!(
        run.value_of("Truck", "EngineTorque").await,
        Value::Float(2.0)
    );
    dev.send(&frame(512, false, &[1])).await.unwrap();
    assert_eq!(run.value_of("Truck", "door").await, Value::Int(1));
    run.stop().await;
}

#[tokio::test]
async fn j1939_values_match_by_pgn_and_are_requested() {
    let net = FakeCan::new();
    net.add_interface("can0", false);
    let mut ecu = net.socket("can0", false).unwrap();
    let cfg = json!({"channel": "can0", "devices": [{"name": "Engine", "j1939SourceAddress": 249,
    "timeseries": [
        {"key": "coolant", "pgn": 65262, "sourceAddress": 0, "value": "0:1:int", "expression": "value - 40",
         "polling": {"period": 0.05}}
    ]}]});
    let mut run = start(cfg, &net);
    // The J1939 Request for PGN 65262 from 0xF9 to the engine (0x00).
    let req = recv(&mut ecu).await;
    assert_eq!(
        (req.id, req.extended, req.data.clone()),
        (0x18EA_00F9, true, vec![0xEE, 0xFE, 0x00])
    );
    // Answers from the engine (0x00) at two priorities; one from another node is not ours.
    ecu.send(&frame(0x1CFE_EE01, true, &[200])).await.unwrap();
    ecu.send(&frame(0x18FE_EE00, true, &[130])).await.unwrap();
    assert_eq!(run.value_of("Engine", "coolant").await, Value::Int(90));
    ecu.send(&frame(0x0CFE_EE00, true, &[140])).await.unwrap();
    assert_eq!(run.value_of("Engine", "coolant").await, Value::Int(100));
    run.stop().await;
}

#[tokio::test]
async fn j1939_multi_packet_broadcasts_are_reassembled() {
    let net = FakeCan::new();
    net.add_interface("can0", false);
    let cfg = json!({"channel": "can0", "devices": [{"name": "Engine",
        "attributes": [{"key": "vin", "pgn": 65260, "value": "0:-1:string"}],
        "timeseries": [{"key": "speed", "pgn": 61444, "value": "3:2:little:int"}]}]});
    let mut run = start(cfg, &net);
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    let mut ecu = net.socket("can0", false).unwrap();
    let announce = |size: u8, packets: u8| {
        frame(
            0x18EC_FF00,
            true,
            &[32, size, 0, packets, 0xFF, 0xEC, 0xFE, 0x00],
        )
    };
    let packet = |n: u8, chunk: &[u8]| {
        let mut d = vec![n];
        d.extend_from_slice(chunk);
        d.resize(8, 0xFF);
        frame(0x1CEB_FF00, true, &d)
    };
    let vin = b"1FUJGLDR12LM12345";
    // A broken transfer first (packet 3 before 2): counted, nothing reported.
    let errors = run.stats.stats().convert_errors();
    ecu.send(&announce(17, 3)).await.unwrap();
    ecu.send(&packet(1, &vin[0..7])).await.unwrap();
    ecu.send(&packet(3, &vin[14..])).await.unwrap();
    // Then a whole one, with a single-frame PGN in between.
    ecu.send(&announce(17, 3)).await.unwrap();
    ecu.send(&packet(1, &vin[0..7])).await.unwrap();
    ecu.send(&frame(0x0CF0_0400, true, &[0, 0, 0, 0x40, 0x1F, 0, 0, 0]))
        .await
        .unwrap();
    ecu.send(&packet(2, &vin[7..14])).await.unwrap();
    ecu.send(&packet(3, &vin[14..])).await.unwrap();
    assert_eq!(
        run.value_of("Engine", "vin").await,
        Value::String("1FUJGLDR12LM12345".into())
    );
    assert_eq!(run.stats.stats().convert_errors(), errors + 1);
    run.stop().await;
}

#[tokio::test]
async fn can_fd_frames_carry_values_beyond_eight_bytes() {
    let net = FakeCan::new();
    net.add_interface("can0", true);
    let cfg = json!({"channel": "can0", "backend": {"fd": true}, "devices": [{"name": "Pack",
        "timeseries": [{"key": "cell40", "nodeId": 0x123, "isFd": true, "value": "40:2:little:int"},
                       {"key": "serial", "nodeId": 0x123, "value": "48:-1:string"}]}]});
    let mut run = start(cfg, &net);
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    let mut dev = net.socket("can0", true).unwrap();
    let mut data = vec![0u8; 64];
    data[40] = 0xE8;
    data[41] = 0x03;
    data[48..64].copy_from_slice(b"PACK-0001-ABCDEF");
    dev.send(&CanFrame::new(0x123, false, true, true, data).unwrap())
        .await
        .unwrap();
    let Up::Data(d) = run.next().await else {
        panic!()
    };
    assert_eq!(d.value("cell40"), Some(Value::Int(1000)));
    assert_eq!(
        d.value("serial"),
        Some(Value::String("PACK-0001-ABCDEF".into()))
    );
    run.stop().await;
}

#[tokio::test]
async fn upstreams_sample_is_accepted_and_its_broken_rpc_answers_an_error() {
    let Some(path) = tbgw::test_util::upstream_sample("can.json") else {
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg: Json = serde_json::from_str(&text).unwrap();
    let net = FakeCan::new();
    net.add_interface("vcan0", true);
    let (mut run, ignored) = start_with(cfg, Path::new("can.json"), Arc::new(net.clone()));
    assert!(
        ignored
            .iter()
            .any(|w| w.starts_with("devices[0].serverSideRpc[0].dataInHex")),
        "{ignored:?}"
    );
    run.wait_for(|u| matches!(u, Up::Connect(d) if d == "Car"))
        .await;
    let r = run.rpc("Car", "sendSameData", json!({})).await;
    assert_eq!(r["code"], 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not hex"), "{r}");
    run.stop().await;
}

/// On a machine with a real `vcan0` (`sudo ip link add dev vcan0 type vcan && sudo ip link set
/// vcan0 up`): the connector on SocketCAN, a second raw socket playing the device.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn on_a_real_vcan0_when_there_is_one() {
    use tbgw_connectors::can::socketcan_bus::SocketCanOpener;
    use tbgw_connectors::can::BusSpec;
    if !Path::new("/sys/class/net/vcan0").exists() {
        eprintln!("skipped: no vcan0 here (create one with `ip link add dev vcan0 type vcan && ip link set vcan0 up`)");
        return;
    }
    let cfg = json!({"channel": "vcan0", "backend": {"fd": true}, "reconnectPeriod": 0.1,
        "devices": [{"name": "V", "timeseries": [{"key": "t", "nodeId": 0x321, "value": "0:2:int"}],
                     "serverSideRpc": [{"method": "m", "nodeId": 0x322, "dataInHex": "0102"}]}]});
    let (mut run, _) = start_with(cfg, Path::new("can.json"), Arc::new(SocketCanOpener));
    run.wait_for(|u| matches!(u, Up::Connect(_))).await;
    let spec = BusSpec {
        interface: "socketcan".into(),
        channel: "vcan0".into(),
        fd: true,
        filters: vec![],
    };
    let mut dev = SocketCanOpener.open(&spec).expect("open vcan0");
    dev.send(&frame(0x321, false, &[0x01, 0x02])).await.unwrap();
    assert_eq!(run.value_of("V", "t").await, Value::Int(0x0102));
    assert_eq!(run.rpc("V", "m", json!({})).await, json!({"success": true}));
    let f = tokio::time::timeout(WAIT, async {
        loop {
            let f = dev.recv().await.unwrap();
            if f.id == 0x322 {
                return f;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(f.data, [1, 2]);
    run.stop().await;
}

/// Builds CAN connectors on the fake network, for a whole gateway.
#[derive(Debug)]
struct FakeCanFactory(FakeCan);

impl tbgw::connector::ConnectorFactory for FakeCanFactory {
    fn connector_type(&self) -> &'static str {
        "can"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, tbgw::config::ConfigError> {
        Ok(Box::new(
            CanFactory::new()
                .build_can(spec, ignored)?
                .with_opener(Arc::new(self.0.clone())),
        ))
    }
}

/// Upstream #2102: with `remoteConfiguration`, every reconnect to ThingsBoard tore the CAN
/// connector down and up, and the bus never came back. Here ThingsBoard's broker restarts
/// twice and ThingsBoard sends the (unchanged) connector configuration again, as it does on
/// a connect: the bus is opened once and frames keep arriving.
#[tokio::test]
async fn thingsboard_reconnects_never_touch_the_bus() {
    use tbgw::test_util::{Mosquitto, TbStandIn};
    let mut broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
    let dir = tempfile::tempdir().unwrap();
    let can = json!({"channel": "can0", "reconnectPeriod": 0.1, "devices": [{"name": "Car",
        "timeseries": [{"key": "t", "nodeId": 0x10, "value": "0:2:int"}]}]});
    std::fs::write(dir.path().join("can.json"), can.to_string()).unwrap();
    std::fs::write(
        dir.path().join("tb_gateway.json"),
        json!({
            "thingsboard": {"host": "127.0.0.1", "port": broker.port(), "remoteConfiguration": true,
                "security": {"type": "accessToken", "accessToken": "gw"}, "sessionLimitsTimeoutMs": 500},
            "storage": {"type": "memory"},
            "connectors": [{"type": "can", "name": "CAN", "configuration": "can.json"}]
        })
        .to_string(),
    )
    .unwrap();
    let net = FakeCan::new();
    net.add_interface("can0", false);
    let loaded = tbgw::config::load(&dir.path().join("tb_gateway.json")).expect("config loads");
    let gateway = tbgw::Gateway::builder()
        .factory(Box::new(FakeCanFactory(net.clone())))
        .config(loaded)
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    let mut dev = net.socket("can0", false).unwrap();
    let seen = |n: u16| {
        let tb = &tb;
        async move {
            tb.wait_for(WAIT, |m| {
                m.topic == "v1/gateway/telemetry" && m.text().contains(&format!("\"t\":{n}"))
            })
            .await
            .is_some()
        }
    };
    // Until the connector is up, frames may go unheard: send until one arrives.
    let mut n = 1u16;
    loop {
        dev.send(&frame(0x10, false, &n.to_be_bytes()))
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(300), seen(n))
            .await
            .unwrap_or(false)
        {
            break;
        }
        n += 1;
        assert!(n < 100, "the connector never reported");
    }
    for round in 0..2u64 {
        broker.restart().await.expect("broker restarts");
        assert!(tb.wait_ready_count(2 + round, WAIT).await, "stand-in back");
        // ThingsBoard sends the connector's configuration again on connect.
        tb.send_gateway_attributes(json!({"CAN": {"name": "CAN", "type": "can",
            "configuration": "can.json", "configurationJson": can}}))
            .await
            .unwrap();
        n = 1000 + round as u16;
        let mut delivered = false;
        for _ in 0..50 {
            dev.send(&frame(0x10, false, &n.to_be_bytes()))
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(300), seen(n))
                .await
                .unwrap_or(false)
            {
                delivered = true;
                break;
            }
        }
        assert!(delivered, "frames after ThingsBoard reconnect {round}");
    }
    assert_eq!(net.opens(), 1, "the bus was opened once");
    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, gateway).await;
}
