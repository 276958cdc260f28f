//! All settings of `account-sync run`: flags, each also read from an `ACCOUNT_SYNC_*` environment
//! variable, with defaults and validation that says which setting is wrong and why.
//!
//! The secret key is deliberately not a flag (flags show in `ps`): it comes from
//! `ACCOUNT_SYNC_SECRET_KEY` or from the file named by `--secret-key-file` (a mounted Kubernetes
//! Secret).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::chat::client::{parse_base_url, ApiLimiters};
use crate::chat::{Api, ChatConfig, OutageRule, Region, RetryPolicy, SecretKey};
use crate::domain::EventKind;
pub use crate::kafka::group_protocol::GroupProtocol;
use crate::kafka::properties;
use crate::limiter::Limiter;
use crate::parse::{parse_duration, validate_topic};
use crate::registry::{Auth, RegistryConfig};
use crate::worker::event::{Decoder, Envelope, InputFormat};
use crate::worker::kinds::KindRule;
use crate::worker::pipeline::{ImportApi, ImportPlan};

/// Environment variable holding the app's secret key.
pub const SECRET_KEY_ENV: &str = "ACCOUNT_SYNC_SECRET_KEY";

/// Where the secret key comes from; shared by every subcommand that needs it.
#[derive(Debug, Clone, Args)]
pub struct SecretKeyArgs {
    /// File holding the app's secret key (e.g. a mounted Kubernetes Secret). Without it the key is
    /// read from ACCOUNT_SYNC_SECRET_KEY.
    #[arg(long, env = "ACCOUNT_SYNC_SECRET_KEY_FILE", value_name = "PATH")]
    pub secret_key_file: Option<PathBuf>,
    /// A key given in code (the demo, tests); wins over the file and the environment.
    #[arg(skip)]
    pub secret_key: Option<SecretKey>,
}

impl SecretKeyArgs {
    /// Loads the key: the file if given, else the environment. Errors name the source.
    pub fn load(&self) -> Result<SecretKey, String> {
        if let Some(key) = &self.secret_key {
            return if key.is_empty() {
                Err("the secret key is empty".into())
            } else {
                Ok(key.clone())
            };
        }
        let key = match &self.secret_key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--secret-key-file {}: {e}", path.display()))?;
                SecretKey::new(text)
            }
            None => SecretKey::new(std::env::var(SECRET_KEY_ENV).map_err(|_| {
                format!(
                    "the app's secret key is not set: set {SECRET_KEY_ENV} or --secret-key-file"
                )
            })?),
        };
        if key.is_empty() {
            return Err(match &self.secret_key_file {
                Some(p) => format!("--secret-key-file {} is empty", p.display()),
                None => format!("{SECRET_KEY_ENV} is empty"),
            });
        }
        Ok(key)
    }
}

/// Payload format of input records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormatArg {
    /// A JSON object; fields found by JSON pointers.
    Json,
    /// The whole payload is the UserID.
    Plain,
    /// Avro through a Schema Registry (Confluent wire format); the record read as a document.
    Avro,
    /// Protobuf through a Schema Registry (Confluent wire format); fields by their `.proto` names.
    Protobuf,
    /// JSON through a Schema Registry (Confluent wire format, a JSON Schema's id).
    JsonSchema,
}

/// Environment variable holding the schema registry's basic-auth user info (USER:PASSWORD).
pub const REGISTRY_USER_INFO_ENV: &str = "ACCOUNT_SYNC_SCHEMA_REGISTRY_USER_INFO";
/// Environment variable holding the schema registry's bearer token.
pub const REGISTRY_TOKEN_ENV: &str = "ACCOUNT_SYNC_SCHEMA_REGISTRY_TOKEN";

/// Where the Schema Registry is, for the registry input formats. The credentials come from a
/// file or the environment, never from a flag.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Base URL of a Confluent-compatible Schema Registry (needed by --input-format avro,
    /// protobuf and json-schema), e.g. https://sr.example:8081.
    #[arg(long, env = "ACCOUNT_SYNC_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// File holding the registry's basic-auth user info, USER:PASSWORD (e.g. a mounted
    /// Kubernetes Secret). Without it, ACCOUNT_SYNC_SCHEMA_REGISTRY_USER_INFO if set.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_SCHEMA_REGISTRY_USER_INFO_FILE",
        value_name = "PATH"
    )]
    pub schema_registry_user_info_file: Option<PathBuf>,
    /// File holding a bearer token for the registry. Without it,
    /// ACCOUNT_SYNC_SCHEMA_REGISTRY_TOKEN if set.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_SCHEMA_REGISTRY_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub schema_registry_token_file: Option<PathBuf>,
    /// Per-request timeout of the registry.
    #[arg(long, env = "ACCOUNT_SYNC_SCHEMA_REGISTRY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub schema_registry_timeout: Duration,
}

impl RegistryArgs {
    /// The registry's settings, credentials loaded; `None` when no URL is set. Errors name the
    /// setting and never hold a credential.
    pub fn config(&self, allow_insecure_http: bool) -> Result<Option<RegistryConfig>, String> {
        let Some(url) = &self.schema_registry_url else {
            return Ok(None);
        };
        RegistryConfig::new(
            url,
            self.auth()?,
            self.schema_registry_timeout,
            allow_insecure_http,
        )
        .map(Some)
    }

    fn auth(&self) -> Result<Option<Auth>, String> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|t| t.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let basic = match &self.schema_registry_user_info_file {
            Some(path) => {
                let flag = "--schema-registry-user-info-file";
                Some((
                    Auth::Basic(read(flag, path)?),
                    format!("{flag} {}", path.display()),
                ))
            }
            None => env(REGISTRY_USER_INFO_ENV)
                .map(|v| (Auth::Basic(v), REGISTRY_USER_INFO_ENV.to_owned())),
        };
        let bearer = match &self.schema_registry_token_file {
            Some(path) => {
                let flag = "--schema-registry-token-file";
                Some((
                    Auth::Bearer(read(flag, path)?),
                    format!("{flag} {}", path.display()),
                ))
            }
            None => {
                env(REGISTRY_TOKEN_ENV).map(|v| (Auth::Bearer(v), REGISTRY_TOKEN_ENV.to_owned()))
            }
        };
        match (basic, bearer) {
            (Some(_), Some(_)) => Err(
                "the schema registry has both basic-auth user info and a bearer token: give one"
                    .into(),
            ),
            (Some((auth, source)), None) | (None, Some((auth, source))) => {
                auth.checked(&source).map(Some)
            }
            (None, None) => Ok(None),
        }
    }
}

/// What wraps the row of input records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputEnvelopeArg {
    /// The payload is the signup.
    None,
    /// Debezium change events (JSON converter, with or without its schema wrapper, or flattened
    /// by ExtractNewRecordState): inserts and snapshot reads are signups, read from the row after
    /// the change; updates, deletes, truncates, messages and tombstones are skipped and counted.
    Debezium,
}

/// Delivery guarantee of outcome and dead-letter records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeliveryArg {
    /// Offsets committed after the records are acknowledged; a crash may duplicate outcomes.
    AtLeastOnce,
    /// Records and offsets in one Kafka transaction; read_committed readers see each outcome once.
    ExactlyOnce,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable (default on a terminal).
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// One `key=value` librdkafka property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaProperty {
    /// librdkafka property name.
    pub key: String,
    /// Its value, passed through verbatim.
    pub value: String,
}

impl FromStr for KafkaProperty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("kafka property {s:?} must be key=value"))?;
        let key = k.trim();
        if key.is_empty() {
            return Err(format!("kafka property {s:?} has an empty key"));
        }
        Ok(KafkaProperty {
            key: key.to_owned(),
            value: v.trim().to_owned(),
        })
    }
}

/// The Chat API connection settings (shared by `run` and the demo).
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The app's SDKAppID.
    #[arg(long, env = "ACCOUNT_SYNC_SDKAPPID")]
    pub sdkappid: u64,
    /// The app admin's identifier (an admin UserID).
    #[arg(long, env = "ACCOUNT_SYNC_IDENTIFIER", default_value = "administrator")]
    pub identifier: String,
    /// Vendor region: china, singapore, seoul, tokyo, frankfurt, mumbai, silicon-valley, jakarta.
    #[arg(long, env = "ACCOUNT_SYNC_REGION", default_value = "china", value_parser = Region::from_str)]
    pub region: Region,
    /// Explicit API base URL (overrides --region), e.g. the emulator's http://127.0.0.1:PORT.
    #[arg(long, env = "ACCOUNT_SYNC_API_BASE_URL")]
    pub api_base_url: Option<String>,
    /// Where calls go while the primary domain fails at the transport or HTTP level (default:
    /// the region's backup domain; none with --api-base-url unless given).
    #[arg(long, env = "ACCOUNT_SYNC_BACKUP_API_BASE_URL")]
    pub backup_api_base_url: Option<String>,
    /// Never fail over to a backup domain (wins over --backup-api-base-url).
    #[arg(long, env = "ACCOUNT_SYNC_NO_BACKUP_DOMAIN")]
    pub no_backup_domain: bool,
    /// The Chat API counts as unavailable (an outage: intake pauses, nothing is dead-lettered)
    /// once no call has succeeded for this long while --outage-min-failed-calls calls failed.
    #[arg(long, env = "ACCOUNT_SYNC_OUTAGE_AFTER", default_value = "10s", value_parser = parse_duration)]
    pub outage_after: Duration,
    /// Different calls that must fail with availability errors (transport, 5xx, transient
    /// codes, frequency limit) before an outage is declared.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_OUTAGE_MIN_FAILED_CALLS",
        default_value_t = 5
    )]
    pub outage_min_failed_calls: u32,
    /// Allow a plain http:// base URL on a non-loopback host (the UserSig then travels in clear text).
    #[arg(long, env = "ACCOUNT_SYNC_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// Per-request timeout (must exceed the vendor's 3 s backend timeout).
    #[arg(long, env = "ACCOUNT_SYNC_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Validity of each generated admin UserSig.
    #[arg(long, env = "ACCOUNT_SYNC_USERSIG_VALIDITY", default_value = "180days", value_parser = parse_duration)]
    pub usersig_validity: Duration,
    /// Regenerate the UserSig this long before it expires.
    #[arg(long, env = "ACCOUNT_SYNC_USERSIG_REFRESH_MARGIN", default_value = "1h", value_parser = parse_duration)]
    pub usersig_refresh_margin: Duration,
    /// account_check calls per second for the whole app (vendor limit 100); 0 = unlimited.
    #[arg(long, env = "ACCOUNT_SYNC_CHECK_RATE", default_value_t = 100.0)]
    pub check_rate: f64,
    /// Token bucket capacity for account_check.
    #[arg(long, env = "ACCOUNT_SYNC_CHECK_BURST", default_value_t = 10)]
    pub check_burst: u32,
    /// account_import calls per second for the whole app (vendor limit 200); 0 = unlimited.
    #[arg(long, env = "ACCOUNT_SYNC_IMPORT_RATE", default_value_t = 200.0)]
    pub import_rate: f64,
    /// Token bucket capacity for account_import.
    #[arg(long, env = "ACCOUNT_SYNC_IMPORT_BURST", default_value_t = 20)]
    pub import_burst: u32,
    /// How users are imported: single (one account_import each), batch (one multiaccount_import
    /// per window for its NotImported users), auto (batch when a window has at least --batch-min
    /// users to import).
    #[arg(
        long,
        env = "ACCOUNT_SYNC_IMPORT_API",
        value_enum,
        default_value = "auto"
    )]
    pub import_api: ImportApi,
    /// With --import-api auto: the fewest users to import for which a batch call is made (1-100).
    #[arg(long, env = "ACCOUNT_SYNC_BATCH_MIN", default_value_t = 2)]
    pub batch_min: usize,
    /// multiaccount_import calls per second for the whole app (vendor limit 100, up to 100
    /// accounts each); 0 = unlimited.
    #[arg(long, env = "ACCOUNT_SYNC_BATCH_IMPORT_RATE", default_value_t = 100.0)]
    pub batch_import_rate: f64,
    /// Token bucket capacity for multiaccount_import.
    #[arg(long, env = "ACCOUNT_SYNC_BATCH_IMPORT_BURST", default_value_t = 10)]
    pub batch_import_burst: u32,
    /// account_delete calls per second for the whole app (vendor limit 100, up to 100 UserIDs
    /// each; used only with --apply-deletes); 0 = unlimited.
    #[arg(long, env = "ACCOUNT_SYNC_DELETE_RATE", default_value_t = 100.0)]
    pub delete_rate: f64,
    /// Token bucket capacity for account_delete.
    #[arg(long, env = "ACCOUNT_SYNC_DELETE_BURST", default_value_t = 10)]
    pub delete_burst: u32,
    /// Attempts per API call, the first included.
    #[arg(long, env = "ACCOUNT_SYNC_RETRY_MAX_ATTEMPTS", default_value_t = 8)]
    pub retry_max_attempts: u32,
    /// Attempts for vendor error codes account-sync does not know.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_RETRY_UNKNOWN_CODE_ATTEMPTS",
        default_value_t = 3
    )]
    pub retry_unknown_code_attempts: u32,
    /// No retry starts after this much time since the first attempt.
    #[arg(long, env = "ACCOUNT_SYNC_RETRY_MAX_ELAPSED", default_value = "60s", value_parser = parse_duration)]
    pub retry_max_elapsed: Duration,
    /// First retry delay (doubles each time, with jitter).
    #[arg(long, env = "ACCOUNT_SYNC_RETRY_INITIAL_BACKOFF", default_value = "100ms", value_parser = parse_duration)]
    pub retry_initial_backoff: Duration,
    /// Longest retry delay.
    #[arg(long, env = "ACCOUNT_SYNC_RETRY_MAX_BACKOFF", default_value = "5s", value_parser = parse_duration)]
    pub retry_max_backoff: Duration,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
}

impl ChatArgs {
    /// The client configuration; errors name the setting.
    pub fn chat_config(&self) -> Result<ChatConfig, String> {
        let base_url = match &self.api_base_url {
            Some(raw) => parse_base_url(raw, self.allow_insecure_http)?,
            None => self.region.base_url(),
        };
        let backup_base_url = match (&self.backup_api_base_url, self.no_backup_domain) {
            (_, true) => None,
            (Some(raw), false) => Some(
                parse_base_url(raw, self.allow_insecure_http)
                    .map_err(|e| format!("--backup-api-base-url: {e}"))?,
            ),
            (None, false) if self.api_base_url.is_none() => self.region.backup_base_url(),
            (None, false) => None,
        };
        let mut c = ChatConfig::new(
            self.sdkappid,
            self.identifier.clone(),
            self.secret.load()?,
            base_url,
        );
        c.backup_base_url = backup_base_url;
        c.outage = OutageRule {
            after: self.outage_after,
            min_failed_calls: self.outage_min_failed_calls,
        };
        c.request_timeout = self.request_timeout;
        c.usersig_validity = self.usersig_validity;
        c.usersig_refresh_margin = self.usersig_refresh_margin;
        c.retry = RetryPolicy {
            max_attempts: self.retry_max_attempts,
            unknown_code_attempts: self.retry_unknown_code_attempts,
            max_elapsed: self.retry_max_elapsed,
            initial_backoff: self.retry_initial_backoff,
            max_backoff: self.retry_max_backoff,
        };
        c.validate()
            .map_err(|e| format!("chat API settings: {e}"))?;
        Ok(c)
    }

    /// The import stage's plan; errors name the setting.
    pub fn import_plan(&self) -> Result<ImportPlan, String> {
        let plan = ImportPlan {
            api: self.import_api,
            batch_min: self.batch_min,
        };
        plan.validate()?;
        Ok(plan)
    }

    /// The app's budget per rate-limited API, calls/s (0 = unlimited): what each replica takes
    /// its share of.
    pub fn budget(&self) -> [(Api, f64); 4] {
        [
            (Api::AccountCheck, self.check_rate),
            (Api::AccountImport, self.import_rate),
            (Api::MultiaccountImport, self.batch_import_rate),
            (Api::AccountDelete, self.delete_rate),
        ]
    }

    /// The limiters for the configured rates (0 = unlimited).
    pub fn limiters(&self) -> Result<ApiLimiters, String> {
        let make = |name: &str, rate: f64, burst: u32| -> Result<std::sync::Arc<Limiter>, String> {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!(
                    "--{name}-rate must be a non-negative number, got {rate}"
                ));
            }
            if burst == 0 {
                return Err(format!("--{name}-burst must be at least 1"));
            }
            Ok(std::sync::Arc::new(if rate == 0.0 {
                Limiter::unlimited()
            } else {
                Limiter::new(rate, burst)
            }))
        };
        Ok(ApiLimiters {
            check: make("check", self.check_rate, self.check_burst)?,
            import: make("import", self.import_rate, self.import_burst)?,
            multi_import: make(
                "batch-import",
                self.batch_import_rate,
                self.batch_import_burst,
            )?,
            delete: make("delete", self.delete_rate, self.delete_burst)?,
        })
    }
}

/// The worker's Kafka connection, consumer group, and input and dead-letter topics: shared by
/// `run` and `dlq replay`, so that both read the same flags and `ACCOUNT_SYNC_*` variables.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,…).
    #[arg(long, env = "ACCOUNT_SYNC_BROKERS")]
    pub brokers: String,
    /// Consumer group id; replicas of one deployment share it.
    #[arg(long, env = "ACCOUNT_SYNC_GROUP_ID", default_value = "account-sync")]
    pub group_id: String,
    /// Topic of signup events (or of every kind of account event, see --event-type-pointer).
    #[arg(long, env = "ACCOUNT_SYNC_INPUT_TOPIC", default_value = "signups")]
    pub input_topic: String,
    /// Topic for dead-letter records.
    #[arg(long, env = "ACCOUNT_SYNC_DLQ_TOPIC", default_value = "account-dlq")]
    pub dlq_topic: String,
    /// Extra librdkafka property, key=value (repeatable), e.g. security.protocol=SASL_SSL; each
    /// goes to the clients of its kind (consumer, producer, or both, as librdkafka's
    /// CONFIGURATION.md says). In the environment variable, separate them with `;`.
    #[arg(
        long = "kafka-property",
        env = "ACCOUNT_SYNC_KAFKA_PROPERTIES",
        value_delimiter = ';'
    )]
    pub kafka_properties: Vec<KafkaProperty>,
    /// Consumer group protocol: classic, or consumer (KIP-848, the broker assigns partitions;
    /// needs Apache Kafka 4.0 or later).
    #[arg(
        long,
        env = "ACCOUNT_SYNC_GROUP_PROTOCOL",
        value_enum,
        default_value = "classic"
    )]
    pub group_protocol: GroupProtocol,
}

impl KafkaArgs {
    /// Checks brokers, group, topics and properties; errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("--brokers (ACCOUNT_SYNC_BROKERS) is empty".into());
        }
        validate_topic("--input-topic", &self.input_topic)?;
        validate_topic("--dlq-topic", &self.dlq_topic)?;
        if self.input_topic == self.dlq_topic {
            return Err("--input-topic must differ from --dlq-topic (the worker would consume its own output)".into());
        }
        if self.group_id.trim().is_empty() {
            return Err("--group-id is empty".into());
        }
        let known = properties::catalogue();
        for p in &self.kafka_properties {
            let key = p.key.as_str();
            if known.same(key, "group.protocol") {
                return Err(format!(
                    "--kafka-property {key}: set the group protocol with --group-protocol (ACCOUNT_SYNC_GROUP_PROTOCOL), classic or consumer"
                ));
            }
            if let Some(managed) = MANAGED_KAFKA_PROPERTIES.iter().find(|m| known.same(key, m)) {
                let alias = match key == *managed {
                    true => String::new(),
                    false => format!(", the same property as {managed}"),
                };
                return Err(format!(
                    "--kafka-property {key}: account-sync manages this property itself{alias} (it is what makes the delivery guarantees hold)"
                ));
            }
            self.group_protocol.allows(key)?;
            properties::check(key, &p.value)?;
        }
        Ok(())
    }

    /// The `--kafka-property` pairs, all of them.
    pub fn properties(&self) -> Vec<(String, String)> {
        self.kafka_properties
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    }

    /// The `--kafka-property` pairs for consumers (consumer properties and those of both kinds).
    pub fn consumer_properties(&self) -> Vec<(String, String)> {
        properties::route(&self.properties()).consumer
    }

    /// The `--kafka-property` pairs for producers and admin clients (producer properties and
    /// those of both kinds).
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        properties::route(&self.properties()).producer
    }
}

/// Where the fields of a JSON input record are: shared by `run` (Kafka payloads) and `backfill`
/// (JSON Lines), so both read the same flags and `ACCOUNT_SYNC_*` variables.
#[derive(Debug, Clone, Args)]
pub struct PointerArgs {
    /// JSON pointer to the UserID.
    #[arg(long, env = "ACCOUNT_SYNC_USER_ID_POINTER", default_value = "/UserID")]
    pub user_id_pointer: String,
    /// JSON pointer to the optional nickname.
    #[arg(long, env = "ACCOUNT_SYNC_NICK_POINTER", default_value = "/Nick")]
    pub nick_pointer: String,
    /// JSON pointer to the optional avatar URL.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_FACE_URL_POINTER",
        default_value = "/FaceUrl"
    )]
    pub face_url_pointer: String,
}

impl PointerArgs {
    /// A decoder of `format` with these pointers; errors name the flag.
    pub fn decoder(&self, format: InputFormat) -> Result<Decoder, String> {
        Decoder::new(
            format,
            &self.user_id_pointer,
            &self.nick_pointer,
            &self.face_url_pointer,
        )
    }
}

/// What kind each event is (create, update, delete) and whether deletes are made: shared by
/// `run` and `backfill` (ARCHITECTURE, "Event kinds and order per user").
#[derive(Debug, Clone, Args)]
pub struct KindArgs {
    /// JSON pointer to the event's type. Without it every event is a create (a signup); with it
    /// the type's value is looked up in the lists below.
    #[arg(long, env = "ACCOUNT_SYNC_EVENT_TYPE_POINTER")]
    pub event_type_pointer: Option<String>,
    /// Type values of creates (comma-separated). Without the list every value that is neither
    /// an update nor a delete is a create; with it, other values are skipped (`other_type`).
    #[arg(long, env = "ACCOUNT_SYNC_CREATE_TYPES", value_delimiter = ',')]
    pub create_types: Option<Vec<String>>,
    /// Type values of profile updates (comma-separated): the account is made to exist with the
    /// event's Nick / FaceUrl.
    #[arg(long, env = "ACCOUNT_SYNC_UPDATE_TYPES", value_delimiter = ',')]
    pub update_types: Vec<String>,
    /// Type values of deletions (comma-separated): the account is deleted with --apply-deletes.
    #[arg(long, env = "ACCOUNT_SYNC_DELETE_TYPES", value_delimiter = ',')]
    pub delete_types: Vec<String>,
    /// Delete the accounts of delete events (typed, or Debezium `d`). Deleting cannot be undone
    /// (the vendor also removes the user's friends, groups and conversations), so without this
    /// flag delete events are skipped and counted (`account_sync_events_skipped_total{reason="delete"}`).
    #[arg(long, env = "ACCOUNT_SYNC_APPLY_DELETES")]
    pub apply_deletes: bool,
    /// Call only account_check: nothing is imported, updated or deleted, and each outcome says
    /// what would have been done (would_import, would_update, would_delete), so a first
    /// deployment against a production app can be watched before it writes anything.
    #[arg(long, env = "ACCOUNT_SYNC_DRY_RUN")]
    pub dry_run: bool,
}

impl KindArgs {
    /// The decoder's rule for event kinds (checked by the decoder).
    pub fn rule(&self) -> KindRule {
        KindRule {
            pointer: self.event_type_pointer.clone(),
            create: self.create_types.clone(),
            update: self.update_types.clone(),
            delete: self.delete_types.clone(),
            apply_deletes: self.apply_deletes,
            default: EventKind::Create,
        }
    }
}

/// Settings of `account-sync run`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic for one outcome record per decoded input record.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_OUTCOME_TOPIC",
        default_value = "account-outcomes"
    )]
    pub outcome_topic: String,
    /// Input payload format.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_INPUT_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub input_format: InputFormatArg,
    /// What wraps the row the pointers read: none, or debezium (change events; needs the json
    /// format).
    #[arg(
        long,
        env = "ACCOUNT_SYNC_INPUT_ENVELOPE",
        value_enum,
        default_value = "none"
    )]
    pub input_envelope: InputEnvelopeArg,
    #[command(flatten)]
    pub pointers: PointerArgs,
    #[command(flatten)]
    pub kinds: KindArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Most distinct UserIDs per account_check window (1-100).
    #[arg(long, env = "ACCOUNT_SYNC_WINDOW_SIZE", default_value_t = 100)]
    pub window_size: usize,
    /// Longest a window waits to fill up before it is checked anyway (it is checked sooner when
    /// waiting buys nothing: intake has no more records for now and a check can go out at once).
    #[arg(long, env = "ACCOUNT_SYNC_WINDOW_LINGER", default_value = "250ms", value_parser = parse_duration)]
    pub window_linger: Duration,
    /// Windows being checked/imported at once.
    #[arg(long, env = "ACCOUNT_SYNC_MAX_WINDOWS_IN_FLIGHT", default_value_t = 32)]
    pub max_windows_in_flight: usize,
    /// Input records held at once (received, not yet done); at the bound intake stops reading, and
    /// if that lasts 5 s the partitions are paused.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_MAX_EVENTS_IN_FLIGHT",
        default_value_t = 10_000
    )]
    pub max_events_in_flight: usize,
    /// account_import calls in flight at once, across windows.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_MAX_IMPORTS_IN_FLIGHT",
        default_value_t = 256
    )]
    pub max_imports_in_flight: usize,
    /// How often stored offsets are committed.
    #[arg(long, env = "ACCOUNT_SYNC_COMMIT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// On shutdown, how long in-flight windows may take to finish before the worker exits anyway
    /// (their offsets stay uncommitted and are replayed).
    #[arg(long, env = "ACCOUNT_SYNC_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// First delay before probing the API again after a systemic fault (doubles up to 5 minutes).
    #[arg(long, env = "ACCOUNT_SYNC_SYSTEMIC_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub systemic_probe_interval: Duration,
    /// at-least-once, or exactly-once (outcome and dead-letter records committed in one Kafka
    /// transaction with the input offsets).
    #[arg(
        long,
        env = "ACCOUNT_SYNC_DELIVERY",
        value_enum,
        default_value = "at-least-once"
    )]
    pub delivery: DeliveryArg,
    /// transactional.id of the exactly-once producer; must be unique per replica and stable
    /// across its restarts (default: GROUP-HOSTNAME, the pod name in Kubernetes).
    #[arg(long, env = "ACCOUNT_SYNC_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Exactly-once: longest a transaction gathers finished windows before it commits (it commits
    /// at once when it holds every record read so far).
    #[arg(long, env = "ACCOUNT_SYNC_TRANSACTION_LINGER", default_value = "100ms", value_parser = parse_duration)]
    pub transaction_linger: Duration,
    #[command(flatten)]
    pub chat: ChatArgs,
    #[command(flatten)]
    pub budget: crate::budget::BudgetArgs,
    /// Admin HTTP listen address (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "ACCOUNT_SYNC_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
}

impl WorkerArgs {
    /// Builds the settings from command-line style arguments (without the program name), with
    /// the key given in code: how the demo and the tests configure workers.
    pub fn from_args<I, T>(args: I, secret_key: SecretKey) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            worker: WorkerArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("account-sync"))
            .chain(args.into_iter().map(Into::into));
        let mut w = <Wrapper as clap::Parser>::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .worker;
        w.chat.secret.secret_key = Some(secret_key);
        Ok(w)
    }

    /// Checks everything that can be checked before connecting; errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        validate_topic("--outcome-topic", &self.outcome_topic)?;
        if self.kafka.input_topic == self.outcome_topic {
            return Err(
                "--input-topic must differ from --outcome-topic (it would consume its own output)"
                    .into(),
            );
        }
        validate_window_size(self.window_size)?;
        if self.window_linger.is_zero() {
            return Err("--window-linger must be greater than 0".into());
        }
        if self.max_windows_in_flight == 0
            || self.max_events_in_flight == 0
            || self.max_imports_in_flight == 0
        {
            return Err("--max-windows-in-flight, --max-events-in-flight and --max-imports-in-flight must be at least 1".into());
        }
        if self.max_events_in_flight < self.window_size {
            return Err(format!(
                "--max-events-in-flight ({}) must be at least --window-size ({}), or no window could ever fill",
                self.max_events_in_flight, self.window_size
            ));
        }
        if self
            .transactional_id
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("--transactional-id is empty".into());
        }
        if self.transaction_linger.is_zero() {
            return Err("--transaction-linger must be greater than 0".into());
        }
        if self.commit_interval.is_zero() {
            return Err("--commit-interval must be greater than 0".into());
        }
        self.validate_drain_timeout()?;
        self.decoder()?;
        self.registry_config()?;
        self.chat.limiters()?;
        self.budget.validate()?;
        if self.budget.topic_for(&self.kafka.group_id) == self.kafka.input_topic {
            return Err("--budget-topic must differ from --input-topic".into());
        }
        Ok(())
    }

    /// `--drain-timeout` against the consumer's `max.poll.interval.ms`, as Vector checks its drain
    /// timeout against the session timeout. A revocation holds librdkafka's rebalance callback while
    /// the intake loop drains (up to the drain timeout plus the ack margin); the group waits for a
    /// member's rejoin only up to the rebalance timeout, which librdkafka sets to
    /// `max.poll.interval.ms`, and a longer wait gets the member evicted mid-drain. The session
    /// timeout is not the bound: librdkafka heartbeats from its own thread while the callback waits.
    fn validate_drain_timeout(&self) -> Result<(), String> {
        const KEY: &str = "max.poll.interval.ms";
        let max_poll_interval = match self
            .kafka
            .kafka_properties
            .iter()
            .rev()
            .find(|p| p.key == KEY)
        {
            Some(p) => Duration::from_millis(p.value.trim().parse::<u64>().map_err(|_| {
                format!(
                    "--kafka-property {KEY}={}: not a number of milliseconds",
                    p.value
                )
            })?),
            // librdkafka's default.
            None => Duration::from_secs(300),
        };
        let held = self.drain_timeout + crate::kafka::consumer::REVOKE_ACK_MARGIN;
        if held >= max_poll_interval {
            return Err(format!(
                "--drain-timeout ({}) plus the {} s the rebalance callback allows beyond it must be less than {KEY} ({} ms): the group would evict the worker while it drains",
                humantime::format_duration(self.drain_timeout),
                crate::kafka::consumer::REVOKE_ACK_MARGIN.as_secs(),
                max_poll_interval.as_millis()
            ));
        }
        Ok(())
    }

    /// The transactional id in exactly-once mode (`None` in at-least-once mode).
    pub fn resolved_transactional_id(&self) -> Option<String> {
        if self.delivery != DeliveryArg::ExactlyOnce {
            return None;
        }
        Some(self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("{:08x}", fastrand::u32(..)));
            format!("{}-{host}", self.kafka.group_id)
        }))
    }

    /// The decoder's name for `--input-format`.
    pub fn decoder_format(&self) -> InputFormat {
        match self.input_format {
            InputFormatArg::Json => InputFormat::Json,
            InputFormatArg::Plain => InputFormat::Plain,
            InputFormatArg::Avro => InputFormat::Avro,
            InputFormatArg::Protobuf => InputFormat::Protobuf,
            InputFormatArg::JsonSchema => InputFormat::JsonSchema,
        }
    }

    /// The registry's settings: given exactly when the input format reads through one.
    pub fn registry_config(&self) -> Result<Option<RegistryConfig>, String> {
        let config = self.registry.config(self.chat.allow_insecure_http)?;
        let needs = self.decoder_format().uses_registry();
        match (needs, &config) {
            (true, None) => Err(format!(
                "--input-format {} reads through a schema registry: set --schema-registry-url (ACCOUNT_SYNC_SCHEMA_REGISTRY_URL)",
                self.input_format.to_possible_value().expect("no variant is skipped").get_name()
            )),
            (false, Some(_)) => Err(format!(
                "--schema-registry-url is set, but --input-format {} does not read through a registry",
                self.input_format.to_possible_value().expect("no variant is skipped").get_name()
            )),
            _ => Ok(config),
        }
    }

    /// The input decoder for the configured format, envelope and pointers (a registry format's
    /// decoder still needs its schema cache: [`crate::worker::event::Decoder::with_schemas`]).
    pub fn decoder(&self) -> Result<Decoder, String> {
        let format = self.decoder_format();
        let envelope = match self.input_envelope {
            InputEnvelopeArg::None => Envelope::None,
            InputEnvelopeArg::Debezium => Envelope::Debezium,
        };
        self.pointers
            .decoder(format)?
            .with_envelope(envelope)?
            .with_kinds(self.kinds.rule())
    }
}

/// librdkafka properties whose values the guarantees depend on; `--kafka-property` may not
/// override them, by their own names or by aliases. (`group.protocol` is refused too: it is
/// `--group-protocol`.)
pub const MANAGED_KAFKA_PROPERTIES: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
    "enable.idempotence",
    "isolation.level",
    "transactional.id",
];

/// `--window-size`: 1 to 100, what one `account_check` takes.
pub(crate) fn validate_window_size(size: usize) -> Result<(), String> {
    if (1..=crate::chat::api::MAX_IDS_PER_CALL).contains(&size) {
        Ok(())
    } else {
        Err(format!(
            "--window-size must be 1 to 100 (account_check takes at most 100 UserIDs), got {size}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    fn parse(args: &[&str]) -> Result<WorkerArgs, String> {
        let mut all = vec![
            "test",
            "--brokers",
            "localhost:9092",
            "--sdkappid",
            "1400000000",
        ];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map(|c| c.worker)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let w = parse(&[]).unwrap();
        assert_eq!(w.window_size, 100);
        assert_eq!(w.window_linger, Duration::from_millis(250));
        assert_eq!(w.chat.check_rate, 100.0);
        assert_eq!(w.chat.import_rate, 200.0);
        assert_eq!(w.kafka.input_topic, "signups");
        assert_eq!(w.chat.request_timeout, Duration::from_secs(10));
        assert_eq!(w.chat.region, Region::China);
        w.validate().unwrap();
    }

    #[test]
    fn bad_settings_name_themselves() {
        let w = parse(&["--window-size", "101"]).unwrap();
        assert!(w.validate().unwrap_err().contains("--window-size"));
        let w = parse(&["--input-topic", "bad topic"]).unwrap();
        assert!(w.validate().unwrap_err().contains("--input-topic"));
        let w = parse(&["--kafka-property", "enable.auto.commit=false"]).unwrap();
        assert!(w.validate().unwrap_err().contains("enable.auto.commit"));
        let w = parse(&["--check-rate=-1"]).unwrap();
        assert!(w.validate().unwrap_err().contains("--check-rate"));
        let w = parse(&["--user-id-pointer", "UserID"]).unwrap();
        assert!(w.validate().unwrap_err().contains("pointer"));
        let w = parse(&["--outcome-topic", "signups"]).unwrap();
        assert!(w.validate().unwrap_err().contains("--input-topic"));
        assert!(parse(&["--window-linger", "soon"])
            .unwrap_err()
            .contains("window-linger"));
        assert!(parse(&["--region", "mars"]).unwrap_err().contains("mars"));
        assert!(parse(&["--kafka-property", "novalue"])
            .unwrap_err()
            .contains("key=value"));
    }

    #[test]
    fn kafka_properties_are_repeatable() {
        let w = parse(&[
            "--kafka-property",
            "security.protocol=SASL_SSL",
            "--kafka-property",
            "sasl.mechanism=PLAIN",
        ])
        .unwrap();
        assert_eq!(w.kafka.kafka_properties.len(), 2);
        assert_eq!(
            w.kafka.kafka_properties[1],
            KafkaProperty {
                key: "sasl.mechanism".into(),
                value: "PLAIN".into()
            }
        );
    }

    #[test]
    fn secret_key_from_file_is_trimmed_and_errors_name_the_source() {
        let dir = std::env::temp_dir().join(format!("as-key-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let args = SecretKeyArgs {
            secret_key_file: Some(dir.clone()),
            secret_key: None,
        };
        let key = args.load().unwrap();
        assert!(!format!("{key:?}").contains("s3cret"));
        std::fs::write(&dir, "\n").unwrap();
        assert!(args.load().unwrap_err().contains("is empty"));
        std::fs::remove_file(&dir).unwrap();
        assert!(args.load().unwrap_err().contains("--secret-key-file"));
    }

    #[test]
    fn drain_timeout_must_fit_in_the_max_poll_interval() {
        // The defaults (30 s + the 10 s ack margin, against librdkafka's 300 s) pass.
        parse(&[]).unwrap().validate().unwrap();
        let err = parse(&["--drain-timeout", "5m"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            err.contains("--drain-timeout") && err.contains("max.poll.interval.ms"),
            "{err}"
        );
        let short_poll = ["--kafka-property", "max.poll.interval.ms=30000"];
        let err = parse(&short_poll).unwrap().validate().unwrap_err();
        assert!(err.contains("30000 ms"), "{err}");
        let w = parse(&[&short_poll[..], &["--drain-timeout", "15s"]].concat()).unwrap();
        w.validate().unwrap();
        // Not a number: librdkafka refuses it, before the comparison.
        let w = parse(&["--kafka-property", "max.poll.interval.ms=soon"]).unwrap();
        let err = w.validate().unwrap_err();
        assert!(
            err.contains("--kafka-property max.poll.interval.ms") && err.contains("refuses"),
            "{err}"
        );
    }

    #[test]
    fn kafka_properties_are_checked_by_librdkafka_and_never_echoed() {
        let err = |args: &[&str]| parse(args).unwrap().validate().unwrap_err();
        let e = err(&["--kafka-property", "sasl.pasword=hunter2"]);
        assert!(
            e.contains("--kafka-property sasl.pasword") && e.contains("no such property"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(&["--kafka-property", "fetch.wait.max.ms=fast"]);
        assert!(
            e.contains("fetch.wait.max.ms") && !e.contains("fast"),
            "{e}"
        );
        // A managed property by another of its names.
        let e = err(&["--kafka-property", "metadata.broker.list=elsewhere:9092"]);
        assert!(
            e.contains("metadata.broker.list") && e.contains("same property as bootstrap.servers"),
            "{e}"
        );
        parse(&[
            "--kafka-property",
            "fetch.wait.max.ms=10",
            "--kafka-property",
            "linger.ms=2",
        ])
        .unwrap()
        .validate()
        .unwrap();
    }

    #[test]
    fn the_group_protocol_is_a_flag_and_decides_which_properties_fit() {
        assert_eq!(
            parse(&[]).unwrap().kafka.group_protocol,
            GroupProtocol::Classic
        );
        let w = parse(&["--group-protocol", "consumer"]).unwrap();
        assert_eq!(w.kafka.group_protocol, GroupProtocol::Consumer);
        w.validate().unwrap();
        assert!(parse(&["--group-protocol", "eager"])
            .unwrap_err()
            .contains("--group-protocol"));
        let e = parse(&["--kafka-property", "group.protocol=consumer"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.contains("group.protocol") && e.contains("--group-protocol"),
            "{e}"
        );
        for key in crate::kafka::group_protocol::CLASSIC_ONLY {
            let prop = format!("{key}=1000");
            let classic = parse(&["--kafka-property", &prop]).unwrap();
            // (group.protocol.type takes any string; partition.assignment.strategy names.)
            if *key == "session.timeout.ms" || *key == "heartbeat.interval.ms" {
                classic.validate().unwrap();
            }
            let e = parse(&["--group-protocol", "consumer", "--kafka-property", &prop])
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(
                e.contains(key) && e.contains("--group-protocol consumer"),
                "{e}"
            );
        }
        let assignor = ["--kafka-property", "group.remote.assignor=uniform"];
        parse(&[&["--group-protocol", "consumer"][..], &assignor].concat())
            .unwrap()
            .validate()
            .unwrap();
        let e = parse(&assignor).unwrap().validate().unwrap_err();
        assert!(e.contains("group.remote.assignor"), "{e}");
    }
}
