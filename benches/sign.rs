//! The cost of hallpass's access tokens: signing one (every device-code exchange and every
//! refresh rotation signs a new JWT, W4 in benches/load.rs), verifying one (every
//! introspection of an access token, W6), and making a key (every `keys rotate`, and the first
//! token of an algorithm), with each algorithm hallpass offers.
//!
//! ```sh
//! cargo bench --bench sign                 # defaults: 20,000 tokens, 20 RSA keys per figure
//! cargo bench --bench sign -- --tokens 50000 --keys 50
//! ```
//!
//! An RSA key is a search for two random primes, so its time varies from key to key: the
//! figure is the mean, with the fastest and slowest of `--keys` keys.
//!
//! Times are the thread's CPU time (Linux's /proc/thread-self/schedstat), so a machine busy
//! with other work does not inflate them; elsewhere, wall time. The kernel brings that figure
//! up to date at scheduler ticks (a few ms), so it times loops and RSA keys, not one µs-long
//! operation: the fastest and slowest key are shown for RSA only.
//!
//! It times the server's own code (`oauth::jwt::SigningKey::sign`, `oauth::jwt::verify`) on one
//! thread, claims shaped like a refresh grant's. These are floors for the load benchmark: a
//! workload that signs once per request can reach at most `cores / (sign µs)` requests per
//! second on signing alone, before any HTTP or database work.

use std::time::Instant;

/// This thread's CPU time so far, in seconds: Linux's schedstat (nanoseconds on a CPU), or the
/// wall clock where it cannot be read.
fn cpu_seconds(wall: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| wall.elapsed().as_secs_f64(), |ns| ns as f64 / 1e9)
}

use hallpass::protocol::jwt::{self, AccessClaims, Algorithm, PublicKey, SigningKey};

fn main() {
    let mut tokens = 20_000u32;
    let mut rsa_keys = 20u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |flag: &str| {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| panic!("{flag} takes a positive number"))
        };
        match a.as_str() {
            "--tokens" => tokens = number("--tokens"),
            "--keys" => rsa_keys = number("--keys"),
            // `cargo bench` passes --bench to every harness-less bench.
            "--bench" => {}
            other => panic!("unknown argument {other:?} (only --tokens N, --keys N)"),
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let epoch = Instant::now();
    println!(
        "hallpass signing benchmark: {tokens} tokens per figure, {rsa_keys} RSA keys, one \
         thread's CPU time, {cores} cores"
    );
    for algorithm in Algorithm::ALL {
        // Key generation: RSA's is slow and varies, the others' is microseconds.
        let samples = match algorithm {
            Algorithm::RS256 => rsa_keys,
            _ => 1000,
        };
        let mut times = Vec::with_capacity(samples as usize);
        for _ in 0..samples {
            let started = cpu_seconds(epoch);
            std::hint::black_box(SigningKey::generate(algorithm));
            times.push((cpu_seconds(epoch) - started) * 1e3);
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        let (key, _) = SigningKey::generate(algorithm);
        let public = [PublicKey {
            kid: key.kid.clone(),
            algorithm,
            public: key.public_key(),
        }];
        let claims = AccessClaims {
            iss: "http://127.0.0.1:8080".into(),
            sub: uuid::Uuid::now_v7().to_string(),
            aud: jwt::Audience::one("https://api.example.com"),
            client_id: uuid::Uuid::now_v7().to_string(),
            scope: "read write".into(),
            iat: 1_764_000_000,
            exp: 1_764_000_900,
            jti: uuid::Uuid::new_v4().to_string(),
            device_id: Some(uuid::Uuid::now_v7().to_string()),
        };
        // Warm up, and keep one token to verify.
        let token = key.sign(&claims);
        for _ in 0..tokens / 10 {
            std::hint::black_box(key.sign(&claims));
        }
        let started = cpu_seconds(epoch);
        for _ in 0..tokens {
            std::hint::black_box(key.sign(std::hint::black_box(&claims)));
        }
        let sign = (cpu_seconds(epoch) - started) * 1e6 / f64::from(tokens);
        let started = cpu_seconds(epoch);
        for _ in 0..tokens {
            let verified = jwt::verify(std::hint::black_box(&token), &public);
            assert!(verified.is_some(), "a token we just signed must verify");
        }
        let verify = (cpu_seconds(epoch) - started) * 1e6 / f64::from(tokens);
        let spread = match algorithm {
            Algorithm::RS256 => format!(" (min {min:.0}, max {max:.0}, {samples} keys)"),
            _ => format!(" (mean of {samples} keys)"),
        };
        println!(
            "{:<6} sign {sign:6.1} µs/token ({:>6.0} tokens/s per core)   verify {verify:5.1} \
             µs/token ({:>6.0} per core)   token {} bytes   new key {mean:.2} ms{spread}",
            algorithm.as_str(),
            1e6 / sign,
            1e6 / verify,
            token.len(),
        );
    }
}
