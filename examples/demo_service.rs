//! The demo service: a fake web service whose metrics and health endpoints
//! are driven by `POST /control` (`{"error_ratio": 0.05, "version": "v2"}`).
//! `scripts/demo.sh` uses it to make a "bad deploy" that rollbackd detects.
//!
//! Usage: `cargo run --example demo_service -- [LISTEN_ADDR]` (default 127.0.0.1:8000).

#[path = "../tests/support/fake_service.rs"]
mod fake_service;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_string());
    let Ok(addr) = addr.parse() else {
        eprintln!("demo_service: {addr:?} is not an address like 127.0.0.1:8000");
        std::process::exit(2);
    };
    let service = fake_service::FakeService::start_on(addr, fake_service::Knobs::default());
    println!("demo service listening on {}", service.url());
    loop {
        std::thread::park();
    }
}
