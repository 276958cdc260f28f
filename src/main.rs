//! `account-sync`: the command line. Thin: parses arguments and calls into the library.

use std::net::SocketAddr;
use std::process::ExitCode;

use account_sync::backfill::BackfillArgs;
use account_sync::chat::usersig;
use account_sync::config::{LogFormat, SecretKeyArgs, WorkerArgs};
use account_sync::devtools::demo::DemoArgs;
use account_sync::devtools::embedded_kafka::{DevKafkaArgs, EmbeddedKafka};
use account_sync::devtools::emulator::{Emulator, EmulatorConfig};
use account_sync::dlq::ReplayArgs;
use account_sync::doctor::DoctorArgs;
use account_sync::shutdown::{self, Shutdown};
use account_sync::worker::Worker;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "account-sync",
    version,
    about = "Kafka signups → Tencent Cloud Chat accounts"
)]
struct Cli {
    /// Log format: text (human) or json (one object per line).
    #[arg(
        long,
        global = true,
        env = "ACCOUNT_SYNC_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax, e.g. info or account_sync=debug); RUST_LOG wins if
    /// set. Default: info; for the demo and doctor, error, and for dlq replay and backfill, warn (their progress and
    /// summary are the output).
    #[arg(long, global = true, env = "ACCOUNT_SYNC_LOG_LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (production).
    Run(Box<WorkerArgs>),
    /// Check a deployment before running it: the settings of `run` (same flags, variables and
    /// key file), Kafka (brokers, topics, group, transactions), the Chat API (one account_check of
    /// the admin), the UserSig lifetime, rates and replicas. One line per check; exit code 0 when
    /// every check passed, 1 otherwise.
    Doctor(Box<DoctorArgs>),
    /// Everything in one process: embedded Kafka, Chat API emulator, load generator, worker.
    Demo(DemoArgs),
    /// End-to-end benchmarks against the embedded Kafka and the emulator; prints a table.
    Bench(account_sync::devtools::bench::BenchArgs),
    /// Local development services.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Dead-letter topic tools.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Migrate existing users from a file (JSON Lines, CSV, or one UserID a line; - for
    /// standard input) through the worker's check and import stages, without Kafka.
    ///
    /// Bad lines are reported (line number and reason) in the rejects file and the run goes on.
    /// With --checkpoint the run is resumable: after Ctrl-C, SIGTERM or a kill, the same command
    /// continues after the last line checkpointed (lines above it that were done before a kill
    /// are done again: their outcomes may appear twice).
    ///
    /// The budget: this command takes the rates it is given (--check-rate, --import-rate;
    /// default the vendor's whole 100 and 200 calls/s). Beside a running worker of the same
    /// app, give each a part of the budget (e.g. --check-rate 50 --import-rate 100 here and
    /// the rest to the worker), or together they exceed the vendor's limits.
    ///
    /// Exit codes: 0 every line done; 1 some users failed (listed in --outcomes, else on
    /// stderr), or an output could not be written; 2 bad settings or an unreadable FILE; 3
    /// stopped by a signal before the end (run the same command again to continue).
    Backfill(Box<BackfillArgs>),
    /// Generate (default) or verify an admin UserSig. The key comes from ACCOUNT_SYNC_SECRET_KEY or --secret-key-file.
    Usersig(UsersigArgs),
}

#[derive(Subcommand)]
enum DevCommand {
    /// A standalone embedded Kafka (librdkafka mock cluster); prints bootstrap servers first.
    Kafka(DevKafkaArgs),
    /// A standalone Chat API emulator; prints its base URL first.
    ChatApi(Box<ChatApiArgs>),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Replay dead letters (original key and payload) to the input topic, up to the end of the
    /// dead-letter topic as of the start, resuming where the last replay stopped. Exit code 0 when
    /// done (or stopped by a signal), 1 when a replay failed, 2 for bad settings.
    Replay(Box<ReplayArgs>),
}

#[derive(clap::Args)]
struct ChatApiArgs {
    /// Listen address (port 0 picks a free port).
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    listen: SocketAddr,
    #[command(flatten)]
    emulator: EmulatorConfig,
    #[command(flatten)]
    secret: SecretKeyArgs,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct UsersigArgs {
    #[command(subcommand)]
    verify: Option<UsersigCommand>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// The app's SDKAppID.
    #[arg(long, env = "ACCOUNT_SYNC_SDKAPPID")]
    sdkappid: Option<u64>,
    /// The identifier the UserSig is for.
    #[arg(long, env = "ACCOUNT_SYNC_IDENTIFIER", default_value = "administrator")]
    identifier: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 180 * 86_400)]
    expire: u64,
    /// Issue time (Unix seconds) instead of now, for reproducible output.
    #[arg(long)]
    time: Option<u64>,
    #[command(flatten)]
    secret: SecretKeyArgs,
}

#[derive(Subcommand)]
enum UsersigCommand {
    /// Decode a UserSig and say whether it is valid for the app and identifier.
    Verify {
        /// The UserSig.
        sig: String,
        /// The app's SDKAppID.
        #[arg(long, env = "ACCOUNT_SYNC_SDKAPPID")]
        sdkappid: u64,
        /// The identifier the UserSig should be for.
        #[arg(long, env = "ACCOUNT_SYNC_IDENTIFIER", default_value = "administrator")]
        identifier: String,
        #[command(flatten)]
        secret: SecretKeyArgs,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) => "error",
        Command::Dlq(_) | Command::Backfill(_) => "warn",
        // Its lines are the output; what goes wrong is in them, not in a log.
        Command::Doctor(_) => "error",
        _ => "info",
    };
    init_logging(
        cli.log_format,
        cli.log_level.as_deref().unwrap_or(default_level),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a subcommand that reports its own errors: `Ok(code)`, or the error printed
/// and its code.
fn exit_code<E: std::fmt::Display>(result: Result<u8, E>, code: impl FnOnce(&E) -> u8) -> ExitCode {
    match result {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(code(&e))
        }
    }
}

/// A shutdown signal fired by SIGINT / SIGTERM; the handlers are in place when it returns.
fn signal_shutdown() -> Shutdown {
    let (shutdown, trigger) = Shutdown::new();
    let signal = shutdown::os_signal();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("signal received: shutting down");
        trigger.trigger();
    });
    shutdown
}

async fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Run(args) => {
            let admin = account_sync::observe::admin::bind_admin(args.admin_listen).await?;
            let worker = Worker::new(*args).map_err(|e| e.to_string())?;
            worker
                .run(Some(admin), signal_shutdown())
                .await
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            let report = account_sync::doctor::run(&args).await;
            match args.json {
                true => println!("{}", report.json()),
                false => print!("{}", report.text()),
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Demo(args) => account_sync::devtools::demo::run(args, signal_shutdown()).await,
        Command::Bench(args) => account_sync::devtools::bench::run(args, signal_shutdown()).await,
        Command::Dlq(DlqCommand::Replay(args)) => {
            let replayed = account_sync::dlq::replay(*args, signal_shutdown()).await;
            Ok(exit_code(replayed.map(|_| 0), |e| e.exit_code()))
        }
        Command::Backfill(args) => {
            let done = account_sync::backfill::run(*args, signal_shutdown()).await;
            Ok(exit_code(done.map(|s| s.exit_code()), |e| e.exit_code()))
        }
        Command::Dev(DevCommand::Kafka(args)) => {
            let kafka = EmbeddedKafka::start(args.brokers, &args.topics)
                .map_err(|e| format!("mock cluster: {e}"))?;
            if let (Some(session), Some(heartbeat)) = (
                args.consumer_group_session_timeout,
                args.consumer_group_heartbeat_interval,
            ) {
                kafka
                    .set_consumer_group_timings(session, heartbeat)
                    .map_err(|e| format!("mock cluster: consumer group timings: {e}"))?;
            }
            // Stoppable before anyone can read the address.
            let stop = signal_shutdown();
            println!("{}", kafka.bootstrap_servers());
            tracing::info!(bootstrap = kafka.bootstrap_servers(), topics = ?args.topics, "embedded Kafka running; Ctrl-C to stop");
            stop.wait().await;
            drop(kafka);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(DevCommand::ChatApi(mut args)) => {
            args.emulator.secret_key = Some(args.secret.load()?);
            let handle = Emulator::start(args.emulator, args.listen)
                .await
                .map_err(|e| e.to_string())?;
            // Stoppable before anyone can read the address.
            let stop = signal_shutdown();
            println!("{}", handle.base_url());
            tracing::info!(base_url = %handle.base_url(), "Chat API emulator running; Ctrl-C to stop");
            stop.wait().await;
            handle.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Usersig(UsersigArgs {
            verify:
                Some(UsersigCommand::Verify {
                    sig,
                    sdkappid,
                    identifier,
                    secret,
                }),
            ..
        }) => {
            let key = secret.load()?;
            let decoded = usersig::decode(&sig);
            if let Ok(doc) = &decoded {
                println!("{}", serde_json::to_string_pretty(doc).unwrap_or_default());
            }
            match usersig::verify(&key, &sig, sdkappid, &identifier, usersig::unix_now()) {
                Ok(_) => {
                    println!("valid");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("invalid: {e} (vendor code {})", e.vendor_code());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Usersig(UsersigArgs {
            verify: None,
            generate: g,
        }) => {
            let sdkappid = g
                .sdkappid
                .ok_or("--sdkappid (ACCOUNT_SYNC_SDKAPPID) is required")?;
            let key = g.secret.load()?;
            let time = g.time.unwrap_or_else(usersig::unix_now);
            println!(
                "{}",
                usersig::generate(&key, sdkappid, &g.identifier, time, g.expire).expose()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
