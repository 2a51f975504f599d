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
    /// Run an encrypted computation end to end and compare it with plaintext.
    Demo {
        /// Parameter preset (see nexus_ckks::presets).
        #[arg(long, default_value = "N16_QP1500_TERN")]
        preset: String,
        /// Tokens in the batch.
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Features per token (power of two).
        #[arg(long, default_value_t = 256)]
        features: usize,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { preset, tokens, features, threads, json } => {
            let mut builder = rayon::ThreadPoolBuilder::new();
            if let Some(t) = threads {
                builder = builder.num_threads(t);
            }
            let pool = builder.build()?;
            let config = DemoConfig { preset, tokens, features };
            let report = pool.install(|| {
                run(&config, |line| {
                    if !json {
                        println!("{line}")
                    }
                })
            })?;
            if json {
                let timings: Vec<String> = report.timings_ms.iter().map(|(k, v)| format!("\"{k}\": {v:.1}")).collect();
                println!(
                    "{{\"preset\": \"{}\", \"secure\": {}, \"tokens\": {}, \"max_abs_error\": {:e}, \"timings_ms\": {{{}}}}}",
                    report.preset,
                    report.secure,
                    report.encrypted.len(),
                    report.max_abs_error,
                    timings.join(", ")
                );
            } else {
                println!("\ntoken   encrypted result    plaintext f64    |error|");
                for (t, (e, p)) in report.encrypted.iter().zip(&report.plaintext).enumerate().take(8) {
                    println!("{t:>5}   {e:>16.9}   {p:>14.9}   {:.2e}", (e - p).abs());
                }
                println!("...   ({} tokens)", report.encrypted.len());
                println!(
                    "max |error| = {:.3e} ({:.1} bits); the server never saw the input or the output.",
                    report.max_abs_error,
                    -report.max_abs_error.log2()
                );
            }
            Ok(())
        }
    }
}
