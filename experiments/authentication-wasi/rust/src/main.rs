//! WASI command: the authentication sample with the args JSON as the last argv entry.

#[path = "../../../common/rust/auth.rs"]
mod auth;

fn main() {
    let input = std::env::args().last().unwrap_or_else(|| "{}".into());
    println!("{}", auth::respond(input.as_bytes()));
}
