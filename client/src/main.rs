//! The `nexus` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use nexus_client::demo::{run, DemoConfig};

#[derive(Parser, Debug)]
#[command(name = "nexus", version, about = "Nexus: transformer inference on homomorphically encrypted data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an encrypted inference through an in-process cluster (one
    /// coordinator, workers, QUIC with mutual TLS on loopback) and compare
    /// it with plaintext.
    Demo {
        /// Parameter preset (see nexus_ckks::presets).
        #[arg(long, default_value = "N15_QP860_TERN")]
        preset: String,
        /// Tokens in the batch.
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// Workers in the cluster.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Threads for the engine (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print progress as text and, last, one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { preset, tokens, workers, threads, json } => {
            let mut builder = rayon::ThreadPoolBuilder::new();
            if let Some(t) = threads {
                builder = builder.num_threads(t);
            }
            builder.build_global()?;
            let config = DemoConfig { preset, tokens, workers };
            let report = run(&config, |line| {
                if !json {
                    println!("{line}")
                }
            });
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    if json {
                        println!("{{\"ok\": false, \"error\": {:?}}}", e.to_string());
                    }
                    return Err(e.into());
                }
            };
            let ok = report.max_abs_error < 1e-3;
            if json {
                let timings: Vec<String> = report.timings_ms.iter().map(|(k, v)| format!("\"{k}\": {v:.1}")).collect();
                println!(
                    "{{\"ok\": {ok}, \"max_abs_err\": {:e}, \"seconds\": {:.2}, \"workers\": {}, \"secure\": {}, \"preset\": \"{}\", \"tokens\": {}, \"timings_ms\": {{{}}}}}",
                    report.max_abs_error,
                    report.seconds,
                    report.workers,
                    report.secure,
                    report.preset,
                    report.encrypted.len(),
                    timings.join(", ")
                );
            } else {
                println!("\ntoken   decrypted (encrypted inference)            plaintext f64                              max |error|");
                for (t, (e, p)) in report.encrypted.iter().zip(&report.plaintext).enumerate().take(6) {
                    let err = e.iter().zip(p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:>9.5}")).collect::<Vec<_>>().join(" ");
                    println!("{t:>5}   {}   {}   {err:.1e}", fmt(e), fmt(p));
                }
                println!("...   ({} tokens)", report.encrypted.len());
                println!(
                    "max |error| = {:.3e} ({:.1} bits) in {:.1} s; the coordinator and workers never saw the input or the output.",
                    report.max_abs_error,
                    -report.max_abs_error.log2(),
                    report.seconds
                );
            }
            if !ok {
                anyhow::bail!("decrypted result differs from plaintext by {:e}", report.max_abs_error);
            }
            Ok(())
        }
    }
}
