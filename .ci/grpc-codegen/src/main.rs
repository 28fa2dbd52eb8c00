//! `tbgw-grpc-codegen <proto dir> <out dir>`: generates the prost messages and the tonic
//! server and client (without transport) for `messages.proto` into `<out dir>/messages.rs`.
//! Needs `protoc` (or `PROTOC`); `.ci/grpc-codegen/check` points `PROTOC` at grpcio-tools'.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(proto_dir), Some(out_dir)) = (args.next(), args.next()) else {
        return Err("usage: tbgw-grpc-codegen <proto dir> <out dir>".into());
    };
    let proto = std::path::Path::new(&proto_dir).join("messages.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(&out_dir)
        .compile_protos(&[proto], &[std::path::PathBuf::from(proto_dir)])?;
    Ok(())
}
