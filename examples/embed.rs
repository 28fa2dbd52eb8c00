//! Run the standard connectors from an upstream-format config directory inside your own
//! program, and read the gateway's counters while it runs.
//!
//! ```sh
//! cargo run -p tbgw-cli --example embed -- examples/config/tb_gateway.json
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/config/tb_gateway.json".into());
    let loaded = tbgw::config::load(std::path::Path::new(&path))?;
    let gateway = tbgw::Gateway::builder()
        .factories(tbgw_connectors::factories())
        .config(loaded)
        .build()?;
    let stats = gateway.stats();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            println!("{:?}", stats.snapshot());
        }
    });
    gateway
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
